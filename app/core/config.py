"""One settings class, read from the environment and `.env`, validated at start-up."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import limits
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.encryption import DataCipher, new_key, parse_key

MIN_SECRET_KEY_BYTES = 32
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./userservice.db"
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# The most bytes a request's head (request line and header fields) may take; a larger one
# is refused with 431 by the HTTP protocol (app/core/http_protocol.py) before the app sees it.
MAX_REQUEST_HEADER_BYTES = 64 * 1024

EmailBackend = Literal["smtp", "console", "file", "off"]
SmtpSecurity = Literal["starttls", "tls", "none"]
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEFAULT_PASSWORD_RESET_PATH = "/account/reset-password?token={token}"  # noqa: S105
DEFAULT_EMAIL_VERIFY_PATH = "/account/verify-email?token={token}"
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

# The highest AVATAR_MAX_PIXELS accepted (8192x8192): a decoded RGBA image of this size
# takes 256 MiB, so the setting cannot be raised into memory-exhaustion territory.
AVATAR_PIXELS_CEILING = 8192 * 8192
_PIXELS = re.compile(r"\s*([0-9]+)\s*[xX]\s*([0-9]+)\s*")
_ORIGIN = re.compile(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?", re.IGNORECASE)


class DatabaseSettings(BaseSettings):
    """The part of the settings that migrations need (no secrets required)."""

    # hide_input_in_errors: a refused SECRET_KEY must not be printed back.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_pool_timeout: float = Field(default=10.0, gt=0, le=300)
    db_connect_timeout: float = Field(
        default=5.0, gt=0, le=120, description="Seconds to open a PostgreSQL connection."
    )
    db_command_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds one PostgreSQL statement may take (client and server side).",
    )

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "DATABASE_URL must use an async driver: 'sqlite+aiosqlite:///./file.db' or "
                "'postgresql+asyncpg://user:password@host:5432/dbname'"
            )
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


class Settings(DatabaseSettings):
    environment: Literal["development", "production"] = "development"
    secret_key: SecretStr | None = Field(
        default=None,
        description="HMAC key for access tokens, at least 32 bytes. Required in production.",
    )
    secret_key_file: Path = Field(
        default=Path(".secret_key"),
        description="Development only: where the generated key is kept when SECRET_KEY is unset.",
    )
    data_encryption_key: SecretStr | None = Field(
        default=None,
        description="32 random bytes, base64: seals TOTP secrets at rest (AES-256-GCM). "
        "Required in production once an account uses two-factor sign-in; in development "
        "created once in DATA_ENCRYPTION_KEY_FILE. Make one with `python -m app "
        "new-data-key`.",
    )
    data_encryption_key_file: Path = Field(
        default=Path(".data_encryption_key"),
        description="Development only: where the generated DATA_ENCRYPTION_KEY is kept.",
    )
    data_encryption_previous_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated keys that sealed values before a rotation: they still "
        "open them until `python -m app rotate-data-key` has re-sealed every value.",
    )
    jwt_algorithm: Literal["HS256", "HS384", "HS512", "RS256", "ES256"] = "HS256"
    jwt_private_key_file: Path | None = Field(
        default=None, description="PEM private key; required for RS256 and ES256."
    )
    jwt_previous_public_key_files: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="PEM public keys of earlier signing keys, still accepted (key rotation).",
    )
    jwt_issuer: str = Field(default="userservice", min_length=1)
    jwt_audience: str = Field(default="userservice", min_length=1)
    access_token_ttl: timedelta = Field(
        default=timedelta(minutes=15),
        description="Seconds or an ISO 8601 duration (PT15M).",
    )
    refresh_token_ttl: timedelta = Field(default=timedelta(days=14))
    login_limit_per_account: str = "5/15 minutes"  # per (identifier, client address)
    login_limit_per_account_global: str = Field(
        default="50/hour",
        description="Password attempts per account from all addresses, successes included.",
    )
    login_limit_per_address: str = "30/minute"
    register_limit_per_address: str = "20/hour"
    password_reset_limit_per_address: str = Field(
        default="20/hour", description="Password-reset requests per client address (429)."
    )
    password_reset_limit_per_email: str = Field(
        default="5/hour",
        description="Password-reset requests per email address, known or not; over it the "
        "answer is still 202 and nothing is sent.",
    )
    email_verify_limit_per_address: str = Field(
        default="20/hour",
        description="Verification-link resend requests per client address (429).",
    )
    email_verify_limit_per_email: str = Field(
        default="5/hour",
        description="Verification-link resend requests per email address, known or not; over "
        "it the answer is still 202 and nothing is sent.",
    )
    redis_url: str | None = Field(
        default=None, description="redis://host:6379/0 to share throttling counts."
    )
    redis_key_prefix: str = Field(default="userservice", min_length=1)
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=list,
        description="Proxies whose X-Forwarded-For is believed (addresses or CIDR networks).",
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    password_hash_threads: int = Field(default=4, ge=1, le=64)
    media_root: Path = Field(
        default=Path("media"),
        description="Directory of the local media storage (avatars); served at /media/.",
    )
    avatar_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    avatar_max_pixels: int = Field(
        default=4096 * 4096,
        ge=1,
        le=AVATAR_PIXELS_CEILING,
        description="Largest avatar in pixels (width x height): a number or WIDTHxHEIGHT.",
    )
    image_threads: int = Field(default=2, ge=1, le=64)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    expose_docs: bool = Field(
        default=True,
        description="Serve /docs, /redoc, /openapi.json and their assets; off: all are 404.",
    )
    readiness_timeout: float = Field(
        default=2.0, gt=0, le=60, description="Seconds /readyz waits for the database."
    )
    legacy_simplejwt_access_token_lifetime: timedelta = Field(
        default=timedelta(minutes=5),
        description="The replaced service's SIMPLE_JWT['ACCESS_TOKEN_LIFETIME']: a legacy "
        "token whose exp - iat is longer is refused. Seconds or ISO 8601; 1 second to 1 day.",
    )
    legacy_simplejwt_issued_before: datetime | None = Field(
        default=None,
        description="The cut-over moment (ISO 8601 with a time zone): the replaced service "
        "issues no token after it, so a legacy token claiming a later iat is forged. Unset: "
        "no such check.",
    )
    legacy_simplejwt_signing_key: SecretStr | None = Field(
        default=None,
        description="The replaced Django service's SECRET_KEY (its SimpleJWT signing key): when "
        "set, that service's unexpired access tokens are accepted. Unset: off.",
    )
    # Email (app/mail/): where the outbox relay delivers messages.
    email_backend: EmailBackend | None = Field(
        default=None,
        description="smtp, console (print to standard error), file (.eml files in "
        "EMAIL_FILE_DIR) or off. Unset: console in development; required in production.",
    )
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: SmtpSecurity = Field(
        default="starttls",
        description="starttls (upgrade a plain connection, refused if the server cannot), "
        "tls (TLS from the first byte, usually port 465) or none.",
    )
    smtp_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds one step of an SMTP exchange may take."
    )
    email_file_dir: Path = Field(
        default=Path("emails"), description="Where the file backend writes one .eml per message."
    )
    email_from: str | None = Field(
        default=None,
        description="The sender, 'address' or 'Name <address>'. Required with smtp; "
        "otherwise SERVICE_NAME <noreply@localhost>.",
    )
    service_name: str = Field(
        default="userservice", min_length=1, max_length=100, description="Named in every email."
    )
    public_url: str = Field(
        default=DEFAULT_PUBLIC_URL,
        description="Where users reach the service (links in email start with it).",
    )
    password_reset_url: str = Field(
        default=f"{{PUBLIC_URL}}{DEFAULT_PASSWORD_RESET_PATH}",
        description="The link of a password-reset email: a template holding {token}, and "
        "{PUBLIC_URL} for PUBLIC_URL. Point it at a frontend's own page.",
    )
    password_reset_ttl: timedelta = Field(
        default=timedelta(hours=1),
        description="How long a reset link works: seconds or ISO 8601, 30 seconds to 1 day.",
    )
    email_verify_url: str = Field(
        default=f"{{PUBLIC_URL}}{DEFAULT_EMAIL_VERIFY_PATH}",
        description="The link of a verification email: a template holding {token}, and "
        "{PUBLIC_URL} for PUBLIC_URL. Point it at a frontend's own page.",
    )
    email_verify_ttl: timedelta = Field(
        default=timedelta(days=1),
        description="How long a verification link works: seconds or ISO 8601, 5 minutes to "
        "30 days.",
    )
    require_verified_email: bool = Field(
        default=False,
        description="Refuse logins (403 email_not_verified) of accounts whose email address "
        "is not verified.",
    )
    notify_new_device: bool = Field(
        default=True,
        description="Email the account when it is signed in to from a device (User-Agent "
        "family and address) it has not used in the last 90 days.",
    )
    audit_retention_days: int = Field(
        default=365,
        ge=1,
        le=3650,
        description="Days the audit trail keeps an event (1 to 3650); older ones are purged "
        "in the background and by `python -m app purge-events`.",
    )

    _split_lists = field_validator(
        "cors_origins",
        "jwt_previous_public_key_files",
        "trusted_proxies",
        "data_encryption_previous_keys",
        mode="before",
    )(_split_commas)

    @field_validator("data_encryption_key", "data_encryption_previous_keys")
    @classmethod
    def _data_keys(cls, value: SecretStr | list[SecretStr] | None) -> object:
        for key in value if isinstance(value, list) else [value]:
            if key is not None:
                try:
                    parse_key(key.get_secret_value())
                except ValueError as exc:
                    raise ValueError(
                        f"a data encryption key {exc}: make one with `python -m app new-data-key`"
                    ) from None
        return value

    @field_validator(
        "login_limit_per_account",
        "login_limit_per_account_global",
        "login_limit_per_address",
        "register_limit_per_address",
        "password_reset_limit_per_address",
        "password_reset_limit_per_email",
        "email_verify_limit_per_address",
        "email_verify_limit_per_email",
    )
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        try:
            limits.parse(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a rate limit: use e.g. '5/15 minutes' or '30/minute'"
            ) from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value or None

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        """Normalise to what a browser sends in ``Origin``: a trailing slash is dropped
        (a copied URL) and the scheme and host are lower-cased; anything else refused."""
        normalised: list[str] = []
        for origin in origins:
            candidate = origin.rstrip("/")
            match = _ORIGIN.fullmatch(candidate)
            if match is None:
                raise ValueError(
                    "CORS_ORIGINS entries must be explicit origins scheme://host[:port] "
                    f"(http or https, no path, no wildcard), got {origin!r}"
                )
            normalised.append(candidate.lower())
        return list(dict.fromkeys(normalised))

    @field_validator("avatar_max_pixels", mode="before")
    @classmethod
    def _pixels(cls, value: object) -> object:
        if isinstance(value, str) and (match := _PIXELS.fullmatch(value)):
            return int(match.group(1)) * int(match.group(2))
        return value

    @field_validator(
        "email_backend", "smtp_host", "smtp_username", "smtp_password", "email_from", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `VAR=` (compose's ${VAR:-}, docker -e VAR=) means "not set", not "the empty string".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("email_from")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _, address = parseaddr(value)
        local, _, domain = address.rpartition("@")
        if _CONTROL_CHARACTERS.search(value) or not local or not domain or " " in address:
            raise ValueError(f"EMAIL_FROM must be an address or 'Name <address>', got {value!r}")
        return value.strip()

    @field_validator("service_name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if _CONTROL_CHARACTERS.search(value) or not value.strip():
            raise ValueError("SERVICE_NAME must be one line of text")
        return value.strip()

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value.strip()):
            raise ValueError(
                f"PUBLIC_URL must be an http(s) URL without query or fragment, got {value!r}"
            )
        return value.strip().rstrip("/")

    @field_validator("legacy_simplejwt_signing_key")
    @classmethod
    def _legacy_key_not_blank(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and not key.get_secret_value().strip():
            raise ValueError("LEGACY_SIMPLEJWT_SIGNING_KEY must not be empty; unset it instead")
        return key

    @field_validator(
        "access_token_ttl",
        "refresh_token_ttl",
        "legacy_simplejwt_access_token_lifetime",
        "password_reset_ttl",
        "email_verify_ttl",
        mode="before",
    )
    @classmethod
    def _seconds(cls, value: object) -> object:
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("access_token_ttl", "password_reset_ttl")
    @classmethod
    def _positive_ttl(cls, ttl: timedelta, info: ValidationInfo) -> timedelta:
        if not timedelta(seconds=30) <= ttl <= timedelta(days=1):
            name = (info.field_name or "").upper()
            raise ValueError(f"{name} must be between 30 seconds and 1 day")
        return ttl

    @field_validator("refresh_token_ttl")
    @classmethod
    def _refresh_ttl(cls, ttl: timedelta) -> timedelta:
        if not timedelta(minutes=5) <= ttl <= timedelta(days=365):
            raise ValueError("REFRESH_TOKEN_TTL must be between 5 minutes and 365 days")
        return ttl

    @field_validator("email_verify_ttl")
    @classmethod
    def _verify_ttl(cls, ttl: timedelta) -> timedelta:
        if not timedelta(minutes=5) <= ttl <= timedelta(days=30):
            raise ValueError("EMAIL_VERIFY_TTL must be between 5 minutes and 30 days")
        return ttl

    @field_validator("password_reset_url", "email_verify_url")
    @classmethod
    def _link_template(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        name = (info.field_name or "").upper()
        if "{token}" not in value:
            raise ValueError(f"{name} must contain {{token}}, got {value!r}")
        probe = value.replace("{PUBLIC_URL}", DEFAULT_PUBLIC_URL).replace("{token}", "t")
        if "{" in probe or "}" in probe or not re.fullmatch(r"https?://[^\s]+", probe):
            raise ValueError(
                f"{name} must be an http(s) URL holding {{token}} (and optionally "
                f"{{PUBLIC_URL}}), got {value!r}"
            )
        return value

    @field_validator("legacy_simplejwt_access_token_lifetime")
    @classmethod
    def _legacy_lifetime(cls, lifetime: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= lifetime <= timedelta(days=1):
            raise ValueError(
                "LEGACY_SIMPLEJWT_ACCESS_TOKEN_LIFETIME must be between 1 second and 1 day"
            )
        return lifetime

    @field_validator("legacy_simplejwt_issued_before")
    @classmethod
    def _aware(cls, moment: datetime | None) -> datetime | None:
        if moment is not None and moment.tzinfo is None:
            raise ValueError(
                "LEGACY_SIMPLEJWT_ISSUED_BEFORE needs a time zone, e.g. 2026-12-01T06:00:00Z"
            )
        return moment

    @model_validator(mode="after")
    def _signing_keys(self) -> Settings:
        if self.uses_hmac:
            if self.jwt_private_key_file is not None or self.jwt_previous_public_key_files:
                raise ValueError(
                    "JWT_PRIVATE_KEY_FILE and JWT_PREVIOUS_PUBLIC_KEY_FILES are for RS256/ES256; "
                    f"{self.jwt_algorithm} signs with SECRET_KEY"
                )
            return self._require_secret_key()
        if self.jwt_private_key_file is None:
            raise ValueError(f"JWT_ALGORITHM={self.jwt_algorithm} needs JWT_PRIVATE_KEY_FILE")
        for path in (self.jwt_private_key_file, *self.jwt_previous_public_key_files):
            if not path.is_file():
                raise ValueError(f"key file {path} does not exist")
        return self

    @model_validator(mode="after")
    def _email(self) -> Settings:
        if self.email_backend is None:
            if self.environment == "production":
                raise ValueError(
                    "EMAIL_BACKEND is required in production: set EMAIL_BACKEND=smtp (with "
                    "SMTP_HOST and EMAIL_FROM) to send email, or EMAIL_BACKEND=off to send none"
                )
            object.__setattr__(self, "email_backend", "console")
        elif self.email_backend == "console" and self.environment == "production":
            raise ValueError(
                "EMAIL_BACKEND=console is for development (it prints every message, links "
                "included, to standard error): in production set smtp, or off"
            )
        if self.email_backend != "smtp":
            return self
        if self.smtp_host is None:
            raise ValueError("EMAIL_BACKEND=smtp needs SMTP_HOST")
        if self.email_from is None:
            raise ValueError(
                "EMAIL_BACKEND=smtp needs EMAIL_FROM, a sender address the mail server accepts"
            )
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("SMTP_USERNAME and SMTP_PASSWORD go together: set both or neither")
        if self.smtp_username is not None and self.smtp_security == "none":
            raise ValueError(
                "SMTP_SECURITY=none would send SMTP_PASSWORD in clear: use starttls or tls"
            )
        return self

    @property
    def mail_backend(self) -> EmailBackend:
        """EMAIL_BACKEND as validation resolved it (never unset)."""
        assert self.email_backend is not None  # guaranteed by _email
        return self.email_backend

    @property
    def email_sender(self) -> str:
        """EMAIL_FROM, or a local placeholder for the backends that deliver nothing."""
        return self.email_from or f"{self.service_name} <noreply@localhost>"

    def password_reset_link(self, token: str) -> str:
        """PASSWORD_RESET_URL with PUBLIC_URL and ``token`` put in (plain replacement, not
        str.format: a URL may hold other braces' look-alikes)."""
        return _fill_link(self.password_reset_url, self.public_url, token)

    def email_verify_link(self, token: str) -> str:
        """EMAIL_VERIFY_URL with PUBLIC_URL and ``token`` put in, as `password_reset_link`."""
        return _fill_link(self.email_verify_url, self.public_url, token)

    def data_cipher(self) -> DataCipher | None:
        """The cipher of DATA_ENCRYPTION_KEY (and the previous keys); in development the key
        is created once in DATA_ENCRYPTION_KEY_FILE; None in production without a key."""
        key = self.data_encryption_key
        if key is None:
            if self.environment == "production":
                return None
            key = SecretStr(_load_or_create_key_file(self.data_encryption_key_file, new_key))
        previous = [parse_key(old.get_secret_value()) for old in self.data_encryption_previous_keys]
        return DataCipher(parse_key(key.get_secret_value()), previous)

    @property
    def uses_hmac(self) -> bool:
        return self.jwt_algorithm in HMAC_ALGORITHMS

    def _require_secret_key(self) -> Settings:
        if self.secret_key is None:
            if self.environment == "production":
                raise ValueError(
                    "SECRET_KEY is required in production: set it to a random string of at "
                    "least 32 bytes, e.g. the output of `python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))'`"
                )
            key = _load_or_create_key_file(self.secret_key_file, _new_secret_key)
            object.__setattr__(self, "secret_key", SecretStr(key))
        assert self.secret_key is not None
        if len(self.secret_key.get_secret_value().encode()) < MIN_SECRET_KEY_BYTES:
            raise ValueError(f"SECRET_KEY must be at least {MIN_SECRET_KEY_BYTES} bytes long")
        return self

    @property
    def signing_key(self) -> str:
        """The HMAC secret (HS* algorithms only)."""
        assert self.secret_key is not None  # guaranteed by _signing_keys for HMAC
        return self.secret_key.get_secret_value()


def _new_secret_key() -> str:
    return secrets.token_urlsafe(48)


def _load_or_create_key_file(path: Path, make: Callable[[], str]) -> str:
    """Create a development key once (mode 0600) so what it signs or seals survives
    restarts."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if not key:
            raise ValueError(f"key file {path} is empty: delete it to regenerate") from None
        return key
    except OSError as exc:
        raise ValueError(f"cannot create the key file {path}: {exc.strerror}") from None
    key = make()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


@lru_cache
def get_settings() -> Settings:
    return Settings()


def _fill_link(template: str, public_url: str, token: str) -> str:
    return template.replace("{PUBLIC_URL}", public_url).replace("{token}", token)
