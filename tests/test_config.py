"""Settings: validated at start-up, with a clear message for every bad value."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Settings

LONG_KEY = "k" * 32
SMTP = {"email_backend": "smtp", "smtp_host": "mail.example", "email_from": "a@b.example"}


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_defaults(tmp_path: Path) -> None:
    settings = make(secret_key_file=tmp_path / "key")
    assert settings.database_url == "sqlite+aiosqlite:///./userservice.db"
    assert settings.access_token_ttl == timedelta(minutes=15)
    assert settings.environment == "development"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.cors_origins == []
    assert settings.media_root == Path("media")
    assert settings.avatar_max_bytes == 2 * 1024 * 1024
    assert settings.avatar_max_pixels == 4096 * 4096
    assert settings.legacy_simplejwt_signing_key is None  # old SimpleJWT tokens: off
    assert settings.expose_docs is True
    assert settings.email_backend == settings.mail_backend == "console"  # development
    assert settings.smtp_port == 587
    assert settings.smtp_security == "starttls"
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.service_name == "userservice"
    assert settings.email_sender == "userservice <noreply@localhost>"


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("0", False), ("true", True)])
def test_expose_docs_from_the_environment(
    value: str, expected: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPOSE_DOCS", value)
    assert make(secret_key_file=tmp_path / "key").expose_docs is expected


def test_development_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    first = make(secret_key_file=key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = make(secret_key_file=key_file)
    assert first.signing_key == second.signing_key
    assert len(first.signing_key) >= 32


def test_explicit_key_does_not_touch_the_key_file(tmp_path: Path) -> None:
    settings = make(secret_key=LONG_KEY, secret_key_file=tmp_path / "key")
    assert settings.signing_key == LONG_KEY
    assert not (tmp_path / "key").exists()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"environment": "production"}, "SECRET_KEY is required in production"),
        ({"environment": "production", "secret_key": "short"}, "at least 32 bytes"),
        ({"secret_key": "k" * 31}, "at least 32 bytes"),
        ({"environment": "staging", "secret_key": LONG_KEY}, "environment"),
        ({"database_url": "postgresql://u@h/db", "secret_key": LONG_KEY}, "async driver"),
        ({"database_url": "mysql://x", "secret_key": LONG_KEY}, "async driver"),
        ({"cors_origins": "*", "secret_key": LONG_KEY}, "CORS_ORIGINS entries"),
        ({"cors_origins": "https://a.example/app", "secret_key": LONG_KEY}, "CORS_ORIGINS"),
        ({"cors_origins": "a.example:3000", "secret_key": LONG_KEY}, "CORS_ORIGINS"),
        ({"access_token_ttl": 0, "secret_key": LONG_KEY}, "ACCESS_TOKEN_TTL"),
        ({"max_body_bytes": 10, "secret_key": LONG_KEY}, "max_body_bytes"),
        ({"jwt_algorithm": "none", "secret_key": LONG_KEY}, "jwt_algorithm"),
        ({"avatar_max_bytes": 10, "secret_key": LONG_KEY}, "avatar_max_bytes"),
        ({"avatar_max_pixels": "10000x10000", "secret_key": LONG_KEY}, "avatar_max_pixels"),
        ({"avatar_max_pixels": "big", "secret_key": LONG_KEY}, "avatar_max_pixels"),
        ({"image_threads": 0, "secret_key": LONG_KEY}, "image_threads"),
        ({"legacy_simplejwt_signing_key": " ", "secret_key": LONG_KEY}, "must not be empty"),
        (
            {"legacy_simplejwt_access_token_lifetime": "P2D", "secret_key": LONG_KEY},
            "LEGACY_SIMPLEJWT_ACCESS_TOKEN_LIFETIME must be between",
        ),
        (
            {"legacy_simplejwt_issued_before": "2026-12-01T06:00:00", "secret_key": LONG_KEY},
            "needs a time zone",
        ),
        ({"login_limit_per_account_global": "often", "secret_key": LONG_KEY}, "not a rate limit"),
        (
            {"environment": "production", "secret_key": LONG_KEY},
            "EMAIL_BACKEND is required in production: set EMAIL_BACKEND=smtp",
        ),
        (
            {"environment": "production", "secret_key": LONG_KEY, "email_backend": ""},
            "EMAIL_BACKEND is required in production",
        ),
        (
            {"environment": "production", "secret_key": LONG_KEY, "email_backend": "console"},
            "EMAIL_BACKEND=console is for development",
        ),
        ({"email_backend": "sendmail", "secret_key": LONG_KEY}, "email_backend"),
        ({"email_backend": "smtp", "secret_key": LONG_KEY}, "needs SMTP_HOST"),
        (
            {"email_backend": "smtp", "smtp_host": "mail", "secret_key": LONG_KEY},
            "needs EMAIL_FROM",
        ),
        (
            {**SMTP, "smtp_username": "u", "secret_key": LONG_KEY},
            "SMTP_USERNAME and SMTP_PASSWORD go together",
        ),
        (
            {**SMTP, "smtp_username": "u", "smtp_password": "p", "smtp_security": "none"},
            "would send SMTP_PASSWORD in clear",
        ),
        ({**SMTP, "smtp_security": "ssl", "secret_key": LONG_KEY}, "smtp_security"),
        ({**SMTP, "smtp_port": 0, "secret_key": LONG_KEY}, "smtp_port"),
        ({**SMTP, "smtp_timeout": 0, "secret_key": LONG_KEY}, "smtp_timeout"),
        ({"email_from": "no address", "secret_key": LONG_KEY}, "EMAIL_FROM must be an address"),
        ({"email_from": "a@b.example\r\nBcc: x@y", "secret_key": LONG_KEY}, "EMAIL_FROM"),
        ({"service_name": "Acme\nBcc: x", "secret_key": LONG_KEY}, "SERVICE_NAME"),
        ({"public_url": "ftp://files.example", "secret_key": LONG_KEY}, "PUBLIC_URL"),
        ({"public_url": "https://a.example/?x=1", "secret_key": LONG_KEY}, "PUBLIC_URL"),
    ],
)
def test_bad_settings_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        make(**values)
    assert message in str(excinfo.value)


@pytest.mark.parametrize("backend", ["smtp", "file", "off"])
def test_production_takes_a_chosen_email_backend(backend: str) -> None:
    settings = make(
        environment="production", secret_key=LONG_KEY, **{**SMTP, "email_backend": backend}
    )
    assert settings.mail_backend == backend


def test_email_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SECRET_KEY": LONG_KEY,
        "EMAIL_BACKEND": "smtp",
        "SMTP_HOST": "smtp.example.com",
        "SMTP_PORT": "465",
        "SMTP_SECURITY": "tls",
        "SMTP_USERNAME": "mailer",
        "SMTP_PASSWORD": "s3cret",
        "SMTP_TIMEOUT": "2.5",
        "EMAIL_FROM": "Acme <accounts@acme.example>",
        "SERVICE_NAME": "Acme Accounts",
        "PUBLIC_URL": "https://accounts.acme.example/",
        "EMAIL_FILE_DIR": "/var/mail/out",
    }.items():
        monkeypatch.setenv(name, value)
    settings = make()
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == (
        "smtp.example.com",
        465,
        "tls",
    )
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.smtp_timeout == 2.5
    assert settings.email_sender == "Acme <accounts@acme.example>"
    assert settings.public_url == "https://accounts.acme.example"  # no trailing slash
    assert settings.email_file_dir == Path("/var/mail/out")


def test_empty_email_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """compose's ${SMTP_HOST:-} and docker's -e SMTP_HOST= pass empty strings."""
    for name in ("EMAIL_BACKEND", "SMTP_HOST", "SMTP_USERNAME", "SMTP_PASSWORD", "EMAIL_FROM"):
        monkeypatch.setenv(name, "")
    settings = make(secret_key=LONG_KEY)
    assert settings.mail_backend == "console"
    assert settings.smtp_host is None
    assert settings.smtp_password is None


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", LONG_KEY)
    monkeypatch.setenv("ACCESS_TOKEN_TTL", "PT5M")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, http://localhost:3000")
    monkeypatch.setenv("MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("AVATAR_MAX_PIXELS", "1024x768")
    monkeypatch.setenv("AVATAR_MAX_BYTES", "65536")
    monkeypatch.setenv("MEDIA_ROOT", "/srv/uploads")
    monkeypatch.setenv("LEGACY_SIMPLEJWT_ACCESS_TOKEN_LIFETIME", "PT2H")
    monkeypatch.setenv("LEGACY_SIMPLEJWT_ISSUED_BEFORE", "2026-12-01T06:00:00Z")
    settings = make()
    assert settings.legacy_simplejwt_access_token_lifetime == timedelta(hours=2)
    assert settings.legacy_simplejwt_issued_before is not None
    assert settings.legacy_simplejwt_issued_before.isoformat() == "2026-12-01T06:00:00+00:00"
    assert settings.avatar_max_pixels == 1024 * 768
    assert settings.avatar_max_bytes == 65536
    assert settings.media_root == Path("/srv/uploads")
    assert settings.access_token_ttl == timedelta(minutes=5)
    assert settings.cors_origins == ["https://a.example", "http://localhost:3000"]
    assert settings.max_body_bytes == 2048


def test_values_come_from_a_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(f"SECRET_KEY={LONG_KEY}\nACCESS_TOKEN_TTL=120\n")
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.signing_key == LONG_KEY
    assert settings.access_token_ttl == timedelta(minutes=2)


def serve_in_production(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``serve`` with ENVIRONMENT=production, ``env``, and no SECRET_KEY nor EMAIL_*."""
    variables = {
        key: value
        for key, value in os.environ.items()
        if key != "SECRET_KEY" and not key.startswith("EMAIL_")
    }
    return subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "1"],
        cwd=tmp_path,
        env={**variables, "ENVIRONMENT": "production", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_serve_refuses_to_start_with_a_clear_message(tmp_path: Path) -> None:
    result = serve_in_production(tmp_path)
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert "SECRET_KEY is required in production" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_serve_in_production_needs_an_email_backend(tmp_path: Path) -> None:
    result = serve_in_production(tmp_path, SECRET_KEY=LONG_KEY)
    assert result.returncode == 2
    assert "EMAIL_BACKEND is required in production" in result.stderr
    assert "EMAIL_BACKEND=off" in result.stderr
    assert "Traceback" not in result.stderr


def test_cors_origins_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copied URL (trailing slash, capitals) still matches the browser's Origin header."""
    monkeypatch.setenv("SECRET_KEY", LONG_KEY)
    monkeypatch.setenv(
        "CORS_ORIGINS", "http://localhost:3000/, HTTPS://App.Example, http://[::1]:8080"
    )
    assert make().cors_origins == [
        "http://localhost:3000",
        "https://app.example",
        "http://[::1]:8080",
    ]
