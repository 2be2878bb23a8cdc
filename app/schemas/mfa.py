"""Two-factor sign-in: enrolment, state, management and the sign-in's second step."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.schemas.auth import CurrentPassword

# An app's code (6 digits; spaces allowed, as apps show "123 456") or a recovery code
# (12 characters, dashes and case do not matter).
Code = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=32),
    Field(
        description="The 6 digits the authenticator app shows now.",
        json_schema_extra={"writeOnly": True},
    ),
]
AnyCode = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=32),
    Field(
        description="The app's current 6 digits, or one of the recovery codes.",
        json_schema_extra={"writeOnly": True},
    ),
]
MfaToken = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class TotpEnrolRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: CurrentPassword


class TotpEnrolment(BaseModel):
    secret: str = Field(description="The secret in base32, to type into the app.")
    otpauth_uri: str = Field(description="The otpauth:// URI, to show as a QR code.")


class TotpConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Code


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(
        description="Ten single-use codes, shown this once: each signs in once without the app."
    )


class MfaState(BaseModel):
    totp: bool = Field(description="Sign-in asks for a code of the authenticator app.")
    recovery_codes_left: int


class MfaManage(BaseModel):
    """The password and a code: to turn the second factor off or draw new recovery codes."""

    model_config = ConfigDict(extra="forbid")

    current_password: CurrentPassword
    code: AnyCode


class MfaSignIn(BaseModel):
    """``mfa_token`` from the 403 ``mfa_required`` answer, and ``code`` or
    ``recovery_code`` (one of them)."""

    model_config = ConfigDict(extra="forbid")

    mfa_token: MfaToken
    code: Code | None = None
    recovery_code: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)] | None
    ) = Field(default=None, description="One of the recovery codes (works once).")

    @model_validator(mode="after")
    def _one_factor(self) -> Self:
        if (self.code is None) == (self.recovery_code is None):
            raise ValueError("send either code or recovery_code")
        return self
