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
        ({"cors_origins": "*", "secret_key": LONG_KEY}, "explicit http(s) origins"),
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
    ],
)
def test_bad_settings_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        make(**values)
    assert message in str(excinfo.value)


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


@pytest.mark.slow
def test_serve_refuses_to_start_with_a_clear_message(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "SECRET_KEY"}
    env["ENVIRONMENT"] = "production"
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert "SECRET_KEY is required in production" in result.stderr
    assert "Traceback" not in result.stderr
