from app.models.audit_event import AuditEvent
from app.models.auth_session import AuthSession
from app.models.base import Base
from app.models.email_verification import EmailVerificationToken
from app.models.login_identifier import LoginIdentifier
from app.models.mfa import MfaChallenge, RecoveryCode, TotpCredential
from app.models.outbox import OutboxEmail
from app.models.password_reset import PasswordResetToken
from app.models.user import User, UserSnapshot

__all__ = [
    "AuditEvent",
    "AuthSession",
    "Base",
    "EmailVerificationToken",
    "LoginIdentifier",
    "MfaChallenge",
    "OutboxEmail",
    "PasswordResetToken",
    "RecoveryCode",
    "TotpCredential",
    "User",
    "UserSnapshot",
]
