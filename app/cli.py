"""``python -m app``: serve, migrate, createsuperuser, import-django, send-test-email."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from alembic.config import Config
from pydantic import ValidationError

import app as app_package
from app.core.config import MAX_REQUEST_HEADER_BYTES, DatabaseSettings, Settings

SUPERUSER_PASSWORD_ENV = "USERSERVICE_SUPERUSER_PASSWORD"  # noqa: S105 (a variable name)
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # see app/core/metrics.py
# uvicorn imports it by name in each worker process (app/core/http_protocol.py).
HTTPTOOLS_PROTOCOL = "app.core.http_protocol:HeaderLimitHttpToolsProtocol"
S = TypeVar("S", bound=DatabaseSettings)


class CommandError(Exception):
    """A failure the user can fix; printed without a traceback."""


def alembic_config(database_url: str | None = None) -> Config:
    ini = os.environ.get("ALEMBIC_CONFIG") or str(
        Path(app_package.__file__).resolve().parent.parent / "alembic.ini"
    )
    if not Path(ini).is_file():
        raise CommandError(f"alembic.ini not found at {ini}; set ALEMBIC_CONFIG")
    config = Config(ini)
    if database_url:
        config.set_main_option("sqlalchemy.url", database_url)
    return config


def migrate(database_url: str | None = None) -> None:
    from alembic import command

    url = database_url or _load_settings(DatabaseSettings).database_url
    command.upgrade(alembic_config(url), "head")


def _load_settings(settings_class: type[S]) -> S:
    try:
        return settings_class()
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        raise CommandError(f"invalid configuration:\n{problems}") from None


def _check_signing_keys(settings: Settings) -> None:
    from app.core.security import TokenCodec

    try:
        TokenCodec(settings)
    except ValueError as exc:
        raise CommandError(f"invalid configuration:\n  signing key: {exc}") from None


def serve(host: str, port: int, workers: int, reload: bool) -> None:
    import uvicorn

    from app.core.logging import logging_config

    settings = _load_settings(Settings)  # validates, and creates the development key file once
    _check_signing_keys(settings)
    migrate(settings.database_url)
    metrics_dir = None
    if workers > 1 and not os.environ.get(METRICS_DIR_ENV):
        # Multiprocess metrics: every worker writes its samples under this directory and a
        # scrape of any worker sums them. Set before any worker imports prometheus_client.
        metrics_dir = tempfile.mkdtemp(prefix="userservice-metrics-")
        os.environ[METRICS_DIR_ENV] = metrics_dir
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            reload=reload,
            log_level=settings.log_level.lower(),
            log_config=logging_config(settings.log_level),
            access_log=False,  # RequestMiddleware logs each request as JSON
            proxy_headers=False,
            # uvicorn[standard]'s C event loop and HTTP parser; plain asyncio/h11 only where
            # they cannot be installed (uvloop has no Windows build). Either parser refuses
            # a request head over MAX_REQUEST_HEADER_BYTES: httptools through our protocol
            # (431), h11 through its own limit (400).
            loop="uvloop" if _importable("uvloop") else "asyncio",
            http=HTTPTOOLS_PROTOCOL if _importable("httptools") else "h11",
            h11_max_incomplete_event_size=MAX_REQUEST_HEADER_BYTES,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    env_password = os.environ.get(SUPERUSER_PASSWORD_ENV)
    if env_password:
        return env_password
    if not sys.stdin.isatty():
        raise CommandError(
            f"no password given: use --password-stdin or set {SUPERUSER_PASSWORD_ENV}"
        )
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password (again): "):
        raise CommandError("passwords do not match")
    return first


async def _create_superuser(settings: Settings, username: str, email: str, password: str) -> int:
    from app.core.db import create_engine, create_sessionmaker
    from app.core.errors import AppError
    from app.core.security import PasswordHasher
    from app.models.base import utcnow
    from app.schemas.auth import RegisterRequest
    from app.services import audit
    from app.services.auth import register

    try:
        data = RegisterRequest(username=username, email=email, password=password)
    except ValidationError as exc:
        raise CommandError(
            "; ".join(f"{error['loc'][0]}: {error['msg']}" for error in exc.errors())
        ) from None
    engine = create_engine(settings)
    hasher = PasswordHasher(1)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            user = await register(db, hasher, data)
            user.is_staff = True
            user.is_superuser = True
            # Typed by the operator who runs the service: no link to confirm it.
            user.email_verified_at = utcnow()
            audit.record(
                db,
                audit.EventType.USER_REGISTERED,
                user_id=user.id,
                actor_id=None,
                origin=audit.Origin(),
                details={"via": "createsuperuser"},
            )
            await db.flush()
            return user.id
    except AppError as exc:
        raise CommandError(exc.detail) from None
    finally:
        hasher.close()
        await engine.dispose()


def create_superuser(username: str | None, email: str | None, password_stdin: bool) -> None:
    settings = _load_settings(Settings)
    interactive = sys.stdin.isatty() and not password_stdin
    if username is None:
        if not interactive:
            raise CommandError("--username is required when not interactive")
        username = input("Username: ").strip()
    if email is None:
        if not interactive:
            raise CommandError("--email is required when not interactive")
        email = input("Email: ").strip()
    password = _read_password(password_stdin)
    migrate(settings.database_url)
    user_id = asyncio.run(_create_superuser(settings, username, email, password))
    print(f"Superuser {username!r} created (id {user_id}).")


async def _import_django(settings: Settings, args: argparse.Namespace) -> int:
    from app.core.db import create_engine, create_sessionmaker
    from app.django_import import DjangoImportError, ImportOptions, import_django_users

    options = ImportOptions(
        source_url=args.source,
        table=args.table,
        media_root=args.media_root,
        target_media_root=settings.media_root,
        avatar_max_bytes=settings.avatar_max_bytes,
        avatar_max_pixels=settings.avatar_max_pixels,
        dry_run=args.dry_run,
        skip_invalid=args.skip_invalid,
        emails_verified=args.emails_verified,
    )
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as db:
            report = await import_django_users(
                db, options, lambda message: print(message, file=sys.stderr, flush=True)
            )
            if report.commit:
                await db.commit()
            else:
                await db.rollback()
    except DjangoImportError as exc:
        raise CommandError(str(exc)) from None
    finally:
        await engine.dispose()
    print("\n".join(report.lines()))
    return 1 if report.failures and not report.skip_invalid else 0


def import_django(args: argparse.Namespace) -> int:
    settings = _load_settings(Settings)
    if not args.dry_run:
        migrate(settings.database_url)
    return asyncio.run(_import_django(settings, args))


async def _send_test_email(settings: Settings, to: str) -> int:
    from app.mail.messages import MailKind, compose
    from app.mail.relay import SEND_DEADLINE
    from app.mail.senders import DeliveryError, create_sender

    sender = create_sender(settings)
    if sender.discards:
        print("EMAIL_BACKEND=off: no message sent", file=sys.stderr)
        return 1
    message = compose(
        settings, kind=MailKind.TEST, recipient=to, context={}, secret={}, message_id_hint="test"
    )
    try:
        async with asyncio.timeout(SEND_DEADLINE):
            await sender.send(message)
    except DeliveryError as exc:
        verdict = "refused for good" if exc.permanent else "may work later"
        print(f"not sent through {sender.describe()} ({verdict}): {exc.reason}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(
            f"not sent through {sender.describe()}: no answer within {SEND_DEADLINE:.0f} s",
            file=sys.stderr,
        )
        return 1
    print(f"sent to {to} through {sender.describe()} (Message-ID {message['Message-ID']})")
    return 0


def send_test_email(to: str) -> int:
    """One test message straight through the configured backend (not the outbox): 0 when
    the backend accepted it, 1 when it did not (or EMAIL_BACKEND=off)."""
    from email_validator import EmailNotValidError, validate_email

    settings = _load_settings(Settings)
    try:
        address = validate_email(to.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise CommandError(f"--to: {exc}") from None
    return asyncio.run(_send_test_email(settings, address))


async def _purge_events(settings: Settings) -> int:
    from app.core.db import create_engine, create_sessionmaker
    from app.services import audit

    engine = create_engine(settings)
    try:
        return await audit.purge(
            create_sessionmaker(engine), timedelta(days=settings.audit_retention_days)
        )
    finally:
        await engine.dispose()


def purge_events() -> int:
    """Delete the audit events older than AUDIT_RETENTION_DAYS now (the workers also do it
    hourly)."""
    settings = _load_settings(Settings)
    deleted = asyncio.run(_purge_events(settings))
    print(f"purged {deleted} audit events older than {settings.audit_retention_days} days")
    return 0


def new_data_key() -> int:
    """Print a new DATA_ENCRYPTION_KEY (32 random bytes, base64url)."""
    from app.core.encryption import new_key

    print(new_key())
    return 0


async def _rotate_data_key(settings: Settings) -> tuple[int, int]:
    from sqlalchemy import select

    from app.core.db import create_engine, create_sessionmaker
    from app.models.mfa import TotpCredential

    cipher = settings.data_cipher()
    if cipher is None:
        raise CommandError("DATA_ENCRYPTION_KEY is not set")
    engine = create_engine(settings)
    resealed = total = 0
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            for credential in (await db.scalars(select(TotpCredential).with_for_update())).all():
                total += 1
                if cipher.is_current(credential.secret):
                    continue
                context = f"mfa_totp:{credential.user_id}"
                credential.secret = cipher.seal(cipher.open(credential.secret, context), context)
                resealed += 1
    finally:
        await engine.dispose()
    return resealed, total


def rotate_data_key() -> int:
    """Re-seal every stored secret under DATA_ENCRYPTION_KEY (the previous keys, in
    DATA_ENCRYPTION_PREVIOUS_KEYS, open the old ones); one transaction."""
    from app.core.encryption import UndecryptableValue

    settings = _load_settings(Settings)
    try:
        resealed, total = asyncio.run(_rotate_data_key(settings))
    except UndecryptableValue:
        raise CommandError(
            "a stored secret opens with none of DATA_ENCRYPTION_KEY and "
            "DATA_ENCRYPTION_PREVIOUS_KEYS: add the key that sealed it; nothing was changed"
        ) from None
    print(f"re-sealed {resealed} of {total} TOTP secrets with the current key")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="userservice")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="apply migrations, then run the server")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve_parser.add_argument("--workers", type=int, default=1)
    serve_parser.add_argument("--reload", action="store_true", help="development only")

    commands.add_parser("migrate", help="apply database migrations (alembic upgrade head)")

    superuser = commands.add_parser("createsuperuser", help="create a staff superuser")
    superuser.add_argument("--username")
    superuser.add_argument("--email")
    superuser.add_argument(
        "--password-stdin",
        action="store_true",
        help=f"read the password from standard input (else ${SUPERUSER_PASSWORD_ENV}, "
        "else a prompt)",
    )

    importer = commands.add_parser(
        "import-django",
        help="import the users of the replaced Django service (idempotent; match on id)",
    )
    importer.add_argument(
        "--source",
        required=True,
        help="the Django database: sqlite:///path/db.sqlite3 or postgresql://user@host/db",
    )
    importer.add_argument("--table", help="the users table (default: the one '<app>_users')")
    importer.add_argument(
        "--media-root", type=Path, help="the Django MEDIA_ROOT, to copy avatar files from"
    )
    importer.add_argument("--dry-run", action="store_true", help="check and report; write nothing")
    importer.add_argument(
        "--skip-invalid",
        action="store_true",
        help="import the valid rows even when others cannot be (default: all or nothing)",
    )
    importer.add_argument(
        "--emails-verified",
        action="store_true",
        help="mark the imported addresses verified (default: unverified, as Django never "
        "checked them)",
    )

    test_email = commands.add_parser(
        "send-test-email",
        help="send one message through EMAIL_BACKEND now and report the outcome "
        "(exit 0 only when the backend accepted it)",
    )
    test_email.add_argument("--to", required=True, help="the recipient address")

    commands.add_parser(
        "purge-events", help="delete the audit events older than AUDIT_RETENTION_DAYS now"
    )
    commands.add_parser("new-data-key", help="print a new random DATA_ENCRYPTION_KEY")
    commands.add_parser(
        "rotate-data-key",
        help="re-seal the stored TOTP secrets with DATA_ENCRYPTION_KEY (after moving the old "
        "key to DATA_ENCRYPTION_PREVIOUS_KEYS)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            serve(args.host, args.port, args.workers, args.reload)
        elif args.command == "migrate":
            migrate()
        elif args.command == "createsuperuser":
            create_superuser(args.username, args.email, args.password_stdin)
        elif args.command == "import-django":
            return import_django(args)
        elif args.command == "send-test-email":
            return send_test_email(args.to)
        elif args.command == "purge-events":
            return purge_events()
        elif args.command == "new-data-key":
            return new_data_key()
        elif args.command == "rotate-data-key":
            return rotate_data_key()
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
