from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from app.core.password_policy import PASSWORD_MAX_LENGTH
from app.schemas.fields import (
    Email,
    PersonName,
    PhoneNumber,
    Username,
    reject_control_characters,
)

# Login accepts what older hashers may have stored (Django allows up to 4096 characters);
# registration applies the password rules, which cap new passwords at 128.
LOGIN_PASSWORD_MAX = 4096
LOGIN_IDENTIFIER_MAX = 254

NewPassword = Annotated[
    str,
    Field(
        min_length=1,
        max_length=PASSWORD_MAX_LENGTH,
        description="8 to 128 characters, not entirely numeric, not a common password, "
        "not too similar to the username, email or names.",
        json_schema_extra={"format": "password", "writeOnly": True},
    ),
]


CurrentPassword = Annotated[
    str,
    Field(
        min_length=1,
        max_length=LOGIN_PASSWORD_MAX,
        json_schema_extra={"format": "password", "writeOnly": True},
    ),
]


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username
    email: Email
    password: NewPassword
    first_name: PersonName = ""
    last_name: PersonName = ""
    number_phone: PhoneNumber = ""


class LoginRequest(BaseModel):
    """JSON login body. ``username`` may be the username or the email address."""

    model_config = ConfigDict(extra="forbid")

    username: Annotated[
        str,
        StringConstraints(min_length=1, max_length=LOGIN_IDENTIFIER_MAX),
        AfterValidator(reject_control_characters),  # a NUL would reach the database
    ]
    password: CurrentPassword


class LoginForm(LoginRequest):
    """OAuth2 password-grant form (what the /docs Authorize dialog sends)."""

    model_config = ConfigDict(extra="ignore")

    grant_type: Literal["password"] | None = None
    scope: str = ""
    client_id: str | None = None
    client_secret: str | None = None


class Token(BaseModel):
    access_token: str
    refresh_token: str = Field(description="Single use: exchange it at /auth/token/refresh.")
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Lifetime of the access token in seconds.")
    refresh_expires_in: int = Field(description="Lifetime of the refresh token in seconds.")


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=8192)]


class LogoutRequest(RefreshRequest):
    pass


class JWKS(BaseModel):
    keys: list[dict[str, str]] = Field(description="Public signing keys (RFC 7517), with kid.")


# A reset token as the service issues it is 43 characters (32 random bytes, base64url);
# the bound only keeps junk short before it is hashed.
RESET_TOKEN_MAX = 256


def _link_token(description: str) -> Any:
    """The field of a token from an emailed link (reset, verification)."""
    return Field(
        min_length=1,
        max_length=RESET_TOKEN_MAX,
        description=description,
        json_schema_extra={"writeOnly": True},
    )


class PasswordResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email


class PasswordResetAccepted(BaseModel):
    """The same answer whether or not an account has the address."""

    detail: str = Field(
        default="If an account has this address, a link to reset its password is on its way."
    )


class PasswordResetConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Annotated[str, _link_token("The token of the reset link.")]
    new_password: NewPassword


class EmailVerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Annotated[str, _link_token("The token of the verification link.")]


class EmailVerifyResend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email


class EmailVerifyResendAccepted(BaseModel):
    """The same answer whether or not an account has the address, verified or not."""

    detail: str = Field(
        default="If an account has this unverified address, a new link to confirm it is on its way."
    )
