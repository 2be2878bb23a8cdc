from app.models.auth_session import AuthSession
from app.models.base import Base
from app.models.user import User

__all__ = ["AuthSession", "Base", "User"]
