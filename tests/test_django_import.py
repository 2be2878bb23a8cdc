"""``python -m app import-django`` against a database that Django itself built.

tests/django_project/build_source.py runs the replaced service's migrations and ``create_user``
(one hasher per user) in a subprocess, once per backend, and issues SimpleJWT tokens. The
tests import that database with the CLI, then log in and call the profile through our API.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from jose import jwt
from PIL import Image
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.cli import main
from app.core.config import Settings
from app.core.security import PASSWORD_CONTEXT
from app.main import create_app
from app.models import AuditEvent, PasswordResetToken, User
from app.repositories import password_reset as password_reset_repo
from app.repositories import user_import
from app.repositories import users as users_repo
from app.resources import resources_of
from tests.conftest import (
    PASSWORD,
    TEST_SECRET_KEY,
    asgi_client,
    bearer,
    is_postgres,
    new_database,
    user_payload,
)

DJANGO_PROJECT = Path(__file__).parent / "django_project"
DJANGO_SECRET_KEY = "django-insecure-the-replaced-services-secret-key"
TOKEN = "/api/v1/auth/token"
PROFILE = "/api/v1/users/profile"
SUMMARY = re.compile(
    r"read (\d+), created (\d+), updated (\d+), unchanged (\d+), skipped (\d+); (.*)$", re.M
)
LOGS_IN = ["pbkdf2_default", "pbkdf2_old", "argon2_user", "bcrypt_user", "admin", "with_phone"]


@dataclass(frozen=True)
class DjangoSource:
    url: str  # as an operator passes it to --source
    async_url: str  # for the tests' raw SQL
    media_root: Path
    table: str
    users: dict[str, dict[str, Any]]
    tokens: dict[str, str]

    def id(self, username: str) -> int:
        user_id: int = self.users[username]["id"]
        return user_id

    def password(self, username: str) -> str:
        password: str = self.users[username]["password"]
        return password


@pytest.fixture(scope="session")
def django_source(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DjangoSource]:
    """The replaced service's database, on the same backend as ``database_url``."""
    backend = "postgresql" if is_postgres(database_url) else "sqlite"
    directory = tmp_path_factory.mktemp("django")
    with new_database(backend, directory) as url:
        env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
        env.update(
            DJANGO_SETTINGS_MODULE="oldsite.settings",
            DJANGO_SECRET_KEY=DJANGO_SECRET_KEY,
            DJANGO_MEDIA_ROOT=str(directory / "media"),
        )
        parsed = make_url(url)
        if backend == "sqlite":
            env["DJANGO_DB_NAME"] = str(parsed.database)
            source_url = f"sqlite:///{parsed.database}"
        else:
            env.update(
                DJANGO_DB_ENGINE="postgresql",
                DJANGO_DB_NAME=str(parsed.database),
                DJANGO_DB_HOST=parsed.host or "127.0.0.1",
                DJANGO_DB_PORT=str(parsed.port or 5432),
                DJANGO_DB_USER=parsed.username or "postgres",
                DJANGO_DB_PASSWORD=parsed.password or "",
            )
            source_url = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        built = subprocess.run(
            [sys.executable, str(DJANGO_PROJECT / "build_source.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert built.returncode == 0, built.stderr
        output = json.loads(built.stdout)
        yield DjangoSource(
            url=source_url,
            async_url=url,
            media_root=directory / "media",
            table=output["table"],
            users=output["users"],
            tokens=output["tokens"],
        )


async def source_sql(source: DjangoSource, *statements: str, **params: Any) -> None:
    engine = create_async_engine(source.async_url)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement), params)
    finally:
        await engine.dispose()


async def insert_source_row(
    source: DjangoSource,
    row_id: int,
    username: str,
    email: str,
    *,
    first_name: str = "",
    stored_hash: str = "!unusable",
    superuser: bool = False,
) -> None:
    """A row written straight into the Django table (one create_user would refuse)."""
    await source_sql(
        source,
        f"INSERT INTO {source.table} (id, password, is_superuser, username, first_name, "
        "last_name, email, is_staff, is_active, date_joined, number_phone, avatar) VALUES "
        "(:id, :password, :superuser, :username, :first_name, '', :email, :superuser, true, "
        "CURRENT_TIMESTAMP, '', '')",
        id=row_id,
        password=stored_hash,
        superuser=superuser,
        username=username,
        first_name=first_name,
        email=email,
    )


@pytest.fixture
def media(monkeypatch: pytest.MonkeyPatch, settings: Settings, tmp_path: Path) -> Path:
    """The CLI's environment: our database, our MEDIA_ROOT (returned)."""
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("MEDIA_ROOT", str(tmp_path / "media"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "media"


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    def summary(self) -> dict[str, Any]:
        match = SUMMARY.search(self.out)
        assert match, self.out + self.err
        names = ["read", "created", "updated", "unchanged", "skipped"]
        result: dict[str, Any] = dict(zip(names, map(int, match.groups()[:5]), strict=True))
        result["outcome"] = match.group(6)
        return result


async def import_django(
    capsys: pytest.CaptureFixture[str], source: DjangoSource, *args: str, media_root: bool = True
) -> Outcome:
    argv = ["import-django", "--source", source.url, *args]
    if media_root:
        argv += ["--media-root", str(source.media_root)]
    code = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


async def count_users(app: FastAPI) -> int:
    async with resources_of(app).sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(User)) or 0)


async def stored_hash(app: FastAPI, user_id: int) -> str:
    async with resources_of(app).sessionmaker() as db:
        value = await db.scalar(select(User.password).where(User.id == user_id))
    assert isinstance(value, str)
    return value


def files_under(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file()] if directory.exists() else []


async def log_in(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(TOKEN, json={"username": username, "password": password})


async def test_every_hasher_logs_in_and_is_upgraded(
    client: httpx.AsyncClient,
    app: FastAPI,
    django_source: DjangoSource,
    media: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcome = await import_django(capsys, django_source)
    assert outcome.code == 0, outcome.err
    total = len(django_source.users)
    assert outcome.summary() == {
        "read": total,
        "created": total,
        "updated": 0,
        "unchanged": 0,
        "skipped": 0,
        "outcome": "written",
    }
    assert "rows read" in outcome.err  # progress
    for name in LOGS_IN:
        user_id = django_source.id(name)
        assert await stored_hash(app, user_id) == django_source.users[name]["hash"]  # as stored
        response = await log_in(client, name, django_source.password(name))
        assert response.status_code == 200, (name, response.text)
        assert (await stored_hash(app, user_id)).startswith("$argon2id$"), name
        again = await log_in(client, name, django_source.password(name))
        assert again.status_code == 200, name

    # A re-run changes nothing, and keeps the upgraded hashes.
    rerun = await import_django(capsys, django_source)
    assert rerun.summary()["unchanged"] == total
    assert rerun.summary()["created"] == rerun.summary()["updated"] == 0
    assert (await stored_hash(app, django_source.id("argon2_user"))).startswith("$argon2id$")


@pytest.mark.parametrize(
    ("name", "password"),
    [
        # libpass has no handler for Django's scrypt hasher: refused like a wrong password.
        ("scrypt_user", None),
        ("no_password", "anything-at-all-1"),  # create_user(password=None): "!..."
        ("inactive", None),
        ("argon2_user", "not-the-password-1"),
    ],
)
async def test_refused_logins_are_the_generic_401(
    client: httpx.AsyncClient,
    app: FastAPI,
    django_source: DjangoSource,
    media: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    password: str | None,
) -> None:
    assert (await import_django(capsys, django_source)).code == 0
    response = await log_in(client, name, password or django_source.password(name))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"
    assert await stored_hash(app, django_source.id(name)) == django_source.users[name]["hash"]


async def test_fields_are_kept_and_the_email_normalised(
    client: httpx.AsyncClient,
    django_source: DjangoSource,
    media: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (await import_django(capsys, django_source)).code == 0
    token = (await log_in(client, "mixed.case@example.com", "old-mixed_case-Passw0rd!")).json()
    profile = (await client.get(PROFILE, headers=bearer(token["access_token"]))).json()
    assert profile["id"] == django_source.id("mixed_case")
    assert profile["email"] == "mixed.case@example.com"

    token = (await log_in(client, "admin", django_source.password("admin"))).json()
    admin = (await client.get(PROFILE, headers=bearer(token["access_token"]))).json()
    assert admin["is_staff"] is admin["is_superuser"] is True

    token = (await log_in(client, "with_phone", django_source.password("with_phone"))).json()
    phone = (await client.get(PROFILE, headers=bearer(token["access_token"]))).json()
    assert phone["number_phone"] == "5551234567"
    assert phone["first_name"] == ""
    assert phone["is_staff"] is phone["is_superuser"] is False


async def test_new_registrations_get_ids_past_the_imported_ones(
    client: httpx.AsyncClient,
    django_source: DjangoSource,
    media: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (await import_django(capsys, django_source)).code == 0
    response = await client.post("/api/v1/auth/register", json=user_payload())
    assert response.status_code == 201
    assert response.json()["id"] == max(user["id"] for user in django_source.users.values()) + 1


async def test_a_skipped_top_row_never_hands_its_id_to_a_registration(
    client: httpx.AsyncClient,
    app: FastAPI,
    django_source: DjangoSource,
    media: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Security review, finding 1: the top source row (a superuser) is skipped; the next
    registration here must not get its id, or a later import of the fixed row would merge
    the superuser into the stranger's account (and the stranger's password)."""
    table = django_source.table
    top = max(user["id"] for user in django_source.users.values()) + 1
    await insert_source_row(django_source, top, "boss", "not-an-email", superuser=True)
    try:
        skipped = await import_django(capsys, django_source, "--skip-invalid")
        assert skipped.code == 0
        assert f"row {top}: email" in skipped.out
        stranger = await client.post(
            "/api/v1/auth/register",
            json=user_payload(username="stranger", email="stranger@example.com"),
        )
        assert stranger.status_code == 201
        assert stranger.json()["id"] > top
        await source_sql(
            django_source, f"UPDATE {table} SET email = 'boss@example.com' WHERE id = :id", id=top
        )
        fixed = await import_django(capsys, django_source)
    finally:
        await source_sql(django_source, f"DELETE FROM {table} WHERE id = :id", id=top)
    assert fixed.code == 0, fixed.out
    assert fixed.summary()["created"] == 1
    token = await log_in(client, "stranger", PASSWORD)
    profile = (await client.get(PROFILE, headers=bearer(token.json()["access_token"]))).json()
    assert (profile["id"], profile["is_superuser"]) == (stranger.json()["id"], False)


async def test_a_source_row_never_merges_into_an_account_created_here(
    client: httpx.AsyncClient,
    app: FastAPI,
    django_source: DjangoSource,
    media: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An id of the source held by an account registered here (before the import, or by
    the counter bug above): reported, counted as invalid, never merged; the legacy token
    of the Django user with that id does not reach the local account."""
    holder = django_source.id("argon2_user")  # the legacy access token's user
    await add_local_user(app, holder, "local", "local@example.com")
    outcome = await import_django(capsys, django_source)
    assert outcome.code == 1
    assert f"row {holder}: id belongs to an account created here" in outcome.out
    assert await count_users(app) == 1

    skipping = await import_django(capsys, django_source, "--skip-invalid")
    assert skipping.code == 0
    assert skipping.summary()["created"] == len(django_source.users) - 1
    assert (await log_in(client, "local", "a-local-Passw0rd!")).status_code == 200
    assert (
        await log_in(client, "argon2_user", django_source.password("argon2_user"))
    ).status_code == 401
    legacy = await client.get(PROFILE, headers=bearer(django_source.tokens["access"]))
    assert legacy.status_code == 401


async def test_changed_source_rows_are_updated_not_duplicated(
    app: FastAPI,
    django_source: DjangoSource,
    media: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (await import_django(capsys, django_source)).code == 0
    table = django_source.table
    user_id = django_source.id("bcrypt_user")
    await source_sql(
        django_source,
        f"UPDATE {table} SET first_name = 'Renamed', email = 'NEW@Example.com' WHERE id = :id",
        id=user_id,
    )
    try:
        outcome = await import_django(capsys, django_source)
    finally:
        await source_sql(
            django_source,
            f"UPDATE {table} SET first_name = 'Bcrypt_User', "
            "email = 'bcrypt_user@example.com' WHERE id = :id",
            id=user_id,
        )
    assert outcome.summary()["updated"] == 1
    assert outcome.summary()["created"] == 0
    assert await count_users(app) == len(django_source.users)
    async with resources_of(app).sessionmaker() as db:
        user = await db.get(User, user_id)
    assert user is not None
    assert (user.first_name, user.email) == ("Renamed", "new@example.com")


async def reset_link_holders(app: FastAPI) -> set[int]:
    async with resources_of(app).sessionmaker() as db:
        return set(await db.scalars(select(PasswordResetToken.user_id)))


async def give_reset_links(app: FastAPI, *user_ids: int) -> None:
    now = datetime.now(UTC)
    async with resources_of(app).sessionmaker() as db, db.begin():
        for user_id in user_ids:
            await password_reset_repo.replace(
                db, user_id, f"{user_id:064x}", now, now + timedelta(hours=1)
            )


async def import_with_source_value(
    capsys: pytest.CaptureFixture[str],
    django_source: DjangoSource,
    column: str,
    value: str,
    original: str,
    user_id: int,
) -> Outcome:
    """Import once with ``column`` of the source row ``user_id`` set to ``value``; the
    source row gets ``original`` back afterwards."""
    statement = f"UPDATE {django_source.table} SET {column} = :value WHERE id = :id"
    await source_sql(django_source, statement, value=value, id=user_id)
    try:
        return await import_django(capsys, django_source)
    finally:
        await source_sql(django_source, statement, value=original, id=user_id)


@pytest.fixture
async def source_imported(
    app: FastAPI, django_source: DjangoSource, media: Path, capsys: pytest.CaptureFixture[str]
) -> DjangoSource:
    """The source, imported once into the test's database."""
    assert (await import_django(capsys, django_source)).code == 0
    return django_source


async def test_a_new_password_from_the_source_cancels_a_reset_link(
    app: FastAPI, source_imported: DjangoSource, capsys: pytest.CaptureFixture[str]
) -> None:
    django_source = source_imported
    changed, kept = django_source.id("bcrypt_user"), django_source.id("pbkdf2_default")
    await give_reset_links(app, changed, kept)
    new_hash = (
        PASSWORD_CONTEXT.handler("django_pbkdf2_sha256")
        .using(rounds=1000)
        .hash("changed-in-Django-1")
    )
    original = await stored_hash(app, changed)
    outcome = await import_with_source_value(
        capsys, django_source, "password", new_hash, original, changed
    )
    assert outcome.summary()["updated"] == 1
    assert await reset_link_holders(app) == {kept}


async def test_a_new_email_from_the_source_cancels_a_reset_link(
    app: FastAPI, source_imported: DjangoSource, capsys: pytest.CaptureFixture[str]
) -> None:
    """A link sent to the address the account had must not reset it once the source moved
    the account to another address."""
    django_source = source_imported
    changed, kept = django_source.id("bcrypt_user"), django_source.id("pbkdf2_default")
    await give_reset_links(app, changed, kept)
    async with resources_of(app).sessionmaker() as db:
        original = await db.scalar(select(User.email).where(User.id == changed))
    assert isinstance(original, str)
    outcome = await import_with_source_value(
        capsys, django_source, "email", "moved-elsewhere@example.net", original, changed
    )
    assert outcome.summary()["updated"] == 1
    assert await reset_link_holders(app) == {kept}


async def profile_of(client: httpx.AsyncClient, source: DjangoSource, name: str) -> Any:
    token = (await log_in(client, name, source.password(name))).json()
    return (await client.get(PROFILE, headers=bearer(token["access_token"]))).json()


async def test_avatars_are_reencoded_and_refused_or_missing_ones_reported(
    client: httpx.AsyncClient,
    django_source: DjangoSource,
    media: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Imported avatars get an upload's checks: type by content, re-encoded, metadata gone
    (security review, finding 5)."""
    outcome = await import_django(capsys, django_source)
    assert outcome.code == 0
    lost = django_source.id("lost_avatar")
    assert f"row {lost}: avatar file not found: avatars/gone.jpg" in outcome.out
    fake = django_source.id("fake_avatar")
    assert (
        f"row {fake}: avatar avatars/fake.png refused: The file is not a PNG, JPEG or WebP image."
        in outcome.out
    )

    profile = await profile_of(client, django_source, "with_avatar")
    assert re.fullmatch(r"/media/avatars/[0-9a-f]{32}\.png", profile["avatar"])
    copied = media / profile["avatar"].removeprefix("/media/")
    original = django_source.media_root / "avatars/face.png"
    assert copied.read_bytes() != original.read_bytes()
    with Image.open(copied) as stored, Image.open(original) as source_image:
        assert stored.format == "PNG"
        assert "Comment" in source_image.info
        assert "Comment" not in stored.info  # metadata stripped
        assert stored.convert("RGB").tobytes() == source_image.convert("RGB").tobytes()

    for name in ("lost_avatar", "fake_avatar"):  # imported, without an avatar
        assert (await profile_of(client, django_source, name))["avatar"] is None

    rerun = await import_django(capsys, django_source)  # same file, same path: nothing changes
    assert rerun.summary()["unchanged"] == len(django_source.users)
    dry = await import_django(capsys, django_source, "--dry-run")
    assert dry.summary()["unchanged"] == len(django_source.users)
    assert len(files_under(media)) == 1


async def test_without_media_root_avatars_are_left_empty(
    app: FastAPI, django_source: DjangoSource, media: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = await import_django(capsys, django_source, media_root=False)
    assert outcome.code == 0
    assert f"row {django_source.id('with_avatar')}: no --media-root given" in outcome.out
    assert files_under(media) == []


async def test_dry_run_writes_nothing(
    app: FastAPI, django_source: DjangoSource, media: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = await import_django(capsys, django_source, "--dry-run")
    assert outcome.code == 0
    summary = outcome.summary()
    assert summary["created"] == len(django_source.users)
    assert summary["outcome"] == "dry run: nothing written"
    assert await count_users(app) == 0
    assert files_under(media) == []


@pytest.fixture
async def bad_rows(django_source: DjangoSource) -> AsyncIterator[dict[int, str]]:
    """Rows the service cannot take as they are, inserted with raw SQL next to create_user's.

    Returns {row id: expected reason fragment}; removed again afterwards.
    """
    table = django_source.table
    postgres = is_postgres(django_source.async_url)
    rows: list[tuple[int, str, str, str, str]] = [
        # id, username, email, first_name, expected reason
        (101, "twin_one", "Twin@Example.com", "", "email equal after normalisation to row(s) 102"),
        (102, "twin_two", " twin@example.COM", "", "email equal after normalisation"),
        (103, "long_name", "long@example.com", "x" * 201, "first_name"),
        (104, "bad name", "badname@example.com", "", "username"),
        (105, "no_at", "not-an-email", "", "email"),
        (106, "\uff54\uff57\uff49\uff4e", "tw1@example.com", "", "username equal after"),
        (107, "twin", "tw2@example.com", "", "username equal after normalisation to row(s) 106"),
        (108, "clash", "ARGON2_USER@example.com", "", "email equal after normalisation"),
        (
            110,
            "With_Phone@Example.com",  # with_phone's email: one identifier, two accounts
            "wp2@example.com",
            "",
            f"username equal after normalisation to the email of row(s) "
            f"{django_source.id('with_phone')}",
        ),
        (
            111,
            "costly1",
            "c1@example.com",
            "",
            "password hash refused: django_pbkdf2_sha256 "
            "hash asks for iterations 4000000000, above 5000000",
        ),
        (
            112,
            "costly2",
            "c2@example.com",
            "",
            "password hash refused: django_bcrypt_sha256 hash asks for cost 31, above 16",
        ),
    ]
    passwords = {
        111: "pbkdf2_sha256$4000000000$salt$aGFzaGhhc2hoYXNoaGFzaA==",
        112: "bcrypt_sha256$$2b$31$" + "a" * 53,
    }
    if not postgres:  # PostgreSQL text cannot hold NUL at all
        rows.append(
            (
                109,
                "nul_byte",
                "nul@example.com",
                "a\x00b",
                "control or invisible formatting characters",
            )
        )
    statements = []
    if postgres:  # varchar(200) in Django's schema; an older schema could differ from ours
        statements.append(f"ALTER TABLE {table} ALTER COLUMN first_name TYPE varchar(300)")
    await source_sql(django_source, *statements)
    for row_id, username, email, first_name, _ in rows:
        await insert_source_row(
            django_source,
            row_id,
            username,
            email,
            first_name=first_name,
            stored_hash=passwords.get(row_id, "!unusable"),
        )
    try:
        yield {row_id: reason for row_id, *_, reason in rows}
    finally:
        await source_sql(django_source, f"DELETE FROM {table} WHERE id > 100")
        if postgres:
            await source_sql(
                django_source, f"ALTER TABLE {table} ALTER COLUMN first_name TYPE varchar(200)"
            )


def assert_reported(out: str, bad: dict[int, str]) -> None:
    for row_id, reason in bad.items():
        lines = [line for line in out.splitlines() if line.strip().startswith(f"row {row_id}:")]
        assert any(reason in line for line in lines), (row_id, reason, out)


async def test_bad_rows_mean_nothing_is_written(
    app: FastAPI,
    django_source: DjangoSource,
    bad_rows: dict[int, str],
    media: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcome = await import_django(capsys, django_source)
    assert outcome.code == 1
    assert_reported(outcome.out, bad_rows)
    # 108's email clashes with argon2_user's after normalisation, 110's username with
    # with_phone's email: both rows of each pair are listed.
    assert f"row {django_source.id('argon2_user')}: email equal" in outcome.out
    assert (
        f"row {django_source.id('with_phone')}: email equal after normalisation to the "
        "username of row(s) 110"
    ) in outcome.out
    assert outcome.summary()["outcome"].startswith("nothing written")
    assert await count_users(app) == 0
    assert files_under(media) == []

    dry = await import_django(capsys, django_source, "--dry-run")
    assert dry.code == 1
    assert_reported(dry.out, bad_rows)
    assert await count_users(app) == 0


async def test_skip_invalid_imports_the_rest(
    client: httpx.AsyncClient,
    app: FastAPI,
    django_source: DjangoSource,
    bad_rows: dict[int, str],
    media: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcome = await import_django(capsys, django_source, "--skip-invalid")
    assert outcome.code == 0
    assert_reported(outcome.out, bad_rows)
    summary = outcome.summary()
    skipped = len(bad_rows) + 2  # argon2_user shares 108's email, with_phone 110's username
    assert summary["skipped"] == skipped
    assert summary["created"] == len(django_source.users) - 2
    assert await count_users(app) == len(django_source.users) - 2
    assert len(files_under(media)) == 1
    response = await log_in(client, "bcrypt_user", django_source.password("bcrypt_user"))
    assert response.status_code == 200


async def test_collision_with_an_account_of_this_service_is_reported(
    client: httpx.AsyncClient,
    app: FastAPI,
    django_source: DjangoSource,
    media: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await add_local_user(app, 500, "alice", "BCRYPT_user@example.com")
    await add_local_user(app, 501, "pbkdf2_old@example.com", "someone@example.org")
    outcome = await import_django(capsys, django_source)
    assert outcome.code == 1
    row = django_source.id("bcrypt_user")
    assert f"row {row}: email already belongs to user 500 of this service" in outcome.out
    row = django_source.id("pbkdf2_old")  # its email is user 501's username
    assert f"row {row}: email already belongs to user 501 of this service" in outcome.out
    assert await count_users(app) == 2


async def add_local_user(app: FastAPI, user_id: int, username: str, email: str) -> None:
    """An account created here (as registration would), with a chosen id."""
    async with resources_of(app).sessionmaker() as db, db.begin():
        user = User(
            id=user_id,
            username=username,
            email=email.lower(),
            password=PASSWORD_CONTEXT.hash("a-local-Passw0rd!"),
        )
        await users_repo.add(db, user)
        await user_import.move_id_counter_past(db, user_id)


async def test_unusable_sources_are_errors_not_tracebacks(
    django_source: DjangoSource, media: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    outcome = await import_django(capsys, django_source, "--table", "no_such_table")
    assert outcome.code == 2
    assert "no table 'no_such_table'" in outcome.err
    code = await asyncio.to_thread(
        main, ["import-django", "--source", f"sqlite:///{tmp_path / 'missing.db'}"]
    )
    assert code == 2
    assert "source SQLite database not found" in capsys.readouterr().err


# SimpleJWT tokens of the replaced service.


@pytest.fixture(scope="module")
def app_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """This module's apps accept the replaced service's tokens."""
    directory = tmp_path_factory.mktemp("app")
    return Settings(
        _env_file=None,
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        secret_key_file=directory / "unused-key",
        media_root=directory / "media",
        legacy_simplejwt_signing_key=DJANGO_SECRET_KEY,
        # the test project's SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"], as the README says to set it
        legacy_simplejwt_access_token_lifetime=timedelta(hours=2),
    )


async def test_old_access_tokens_keep_working(
    client: httpx.AsyncClient,
    django_source: DjangoSource,
    media: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (await import_django(capsys, django_source)).code == 0
    for method in (client.get, client.post):
        response = await method(PROFILE, headers=bearer(django_source.tokens["access"]))
        assert response.status_code == 200, response.text
        assert response.json()["id"] == django_source.id("argon2_user")
    # Our own tokens still work beside them.
    ours = await log_in(client, "bcrypt_user", django_source.password("bcrypt_user"))
    response = await client.get(PROFILE, headers=bearer(ours.json()["access_token"]))
    assert response.json()["username"] == "bcrypt_user"


@pytest.mark.parametrize("token", ["refresh", "expired", "inactive_access"])
async def test_old_refresh_expired_and_inactive_tokens_are_401(
    client: httpx.AsyncClient,
    django_source: DjangoSource,
    media: Path,
    capsys: pytest.CaptureFixture[str],
    token: str,
) -> None:
    assert (await import_django(capsys, django_source)).code == 0
    response = await client.get(PROFILE, headers=bearer(django_source.tokens[token]))
    assert response.status_code == 401
    # An expired Django token is `invalid_token`, not `token_expired`: its refresh token
    # is refused here, so only a new login helps.
    assert response.json()["code"] == (
        "inactive_user" if token == "inactive_access" else "invalid_token"
    )
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


async def test_our_expired_token_is_token_expired_beside_the_legacy_codec(
    client: httpx.AsyncClient, imported: DjangoSource
) -> None:
    """The Django codec is tried after ours refused a token: its refusal must not hide that
    ours found the token only expired. Signed with the Django key, it stays invalid."""
    ours = await log_in(client, "bcrypt_user", imported.password("bcrypt_user"))
    now = int(time.time())
    expired = {
        **jwt.get_unverified_claims(ours.json()["access_token"]),
        "iat": now - 1000,
        "exp": now - 1,
    }
    response = await client.get(PROFILE, headers=bearer(jwt.encode(expired, TEST_SECRET_KEY)))
    assert (response.status_code, response.json()["code"]) == (401, "token_expired")
    with_django_key = jwt.encode(expired, DJANGO_SECRET_KEY)
    response = await client.get(PROFILE, headers=bearer(with_django_key))
    assert (response.status_code, response.json()["code"]) == (401, "invalid_token")


@pytest.mark.parametrize("legacy_key", [None, "some-other-django-secret-key"])
async def test_old_tokens_need_the_old_key(
    database_url: str,
    tmp_path: Path,
    django_source: DjangoSource,
    media: Path,
    capsys: pytest.CaptureFixture[str],
    legacy_key: str | None,
) -> None:
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        secret_key_file=tmp_path / "unused-key",
        legacy_simplejwt_signing_key=legacy_key,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        async with resources_of(application).engine.begin() as connection:
            await connection.execute(text("DELETE FROM users"))
        assert (await import_django(capsys, django_source)).code == 0
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get(PROFILE, headers=bearer(django_source.tokens["access"]))
    assert response.status_code == 401


def legacy_token(user_id: int, *, lifetime: float = 300, issued: float = 0, **claims: Any) -> str:
    """An access token as SimpleJWT signs it with the Django key (``issued``: seconds from
    now); ``claims`` replace or, with None, remove claims."""
    now = int(time.time() + issued)
    payload: dict[str, Any] = {
        "token_type": "access",
        "exp": int(now + lifetime),
        "iat": now,
        "jti": uuid.uuid4().hex,
        "user_id": user_id,
    }
    payload.update(claims)
    payload = {key: value for key, value in payload.items() if value is not None}
    return jwt.encode(payload, DJANGO_SECRET_KEY, algorithm="HS256")


@pytest.fixture
async def imported(
    django_source: DjangoSource, media: Path, capsys: pytest.CaptureFixture[str]
) -> DjangoSource:
    assert (await import_django(capsys, django_source)).code == 0
    return django_source


@pytest.mark.parametrize(
    "forged",
    [
        {"exp": 4102444800},  # the review's token: expires in 2100
        {"lifetime": 7201},  # longer than LEGACY_SIMPLEJWT_ACCESS_TOKEN_LIFETIME
        {"iat": None},  # no iat
        {"iat": "2026-01-01"},
        {"issued": 60},  # issued in the future
        {"iat": float("nan")},
    ],
    ids=["exp-2100", "too-long", "no-iat", "iat-string", "future-iat", "iat-nan"],
)
async def test_forged_legacy_tokens_are_refused(
    client: httpx.AsyncClient, imported: DjangoSource, forged: dict[str, Any]
) -> None:
    """Security review, finding 2: a leaked Django key must not mint tokens for ever."""
    admin = imported.id("admin")
    token = legacy_token(admin, **forged)
    response = await client.get(PROFILE, headers=bearer(token))
    assert (response.status_code, response.json()["code"]) == (401, "invalid_token")
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    fair = await client.get(PROFILE, headers=bearer(legacy_token(admin, lifetime=7200)))
    assert fair.status_code == 200


async def test_default_lifetime_is_simplejwts(settings: Settings, imported: DjangoSource) -> None:
    """LEGACY_SIMPLEJWT_ACCESS_TOKEN_LIFETIME defaults to SimpleJWT's 5 minutes: the test
    project's 2-hour tokens are then refused."""
    default = Settings.model_fields["legacy_simplejwt_access_token_lifetime"].default
    assert default == timedelta(minutes=5)
    application = create_app(
        settings.model_copy(update={"legacy_simplejwt_access_token_lifetime": default})
    )
    async with application.router.lifespan_context(application), asgi_client(application) as client:
        two_hours = await client.get(PROFILE, headers=bearer(imported.tokens["access"]))
        five_minutes = await client.get(
            PROFILE, headers=bearer(legacy_token(imported.id("argon2_user")))
        )
    assert (two_hours.status_code, five_minutes.status_code) == (401, 200)


async def test_no_legacy_token_from_after_the_cut_over(
    settings: Settings, imported: DjangoSource
) -> None:
    """With LEGACY_SIMPLEJWT_ISSUED_BEFORE set, a token claiming to be issued after it is
    forged (the old service issues nothing any more): a leaked key mints nothing new, and
    every legacy token dies at most a lifetime after the cut-over."""
    cut_over = datetime.now(UTC) - timedelta(minutes=1)
    application = create_app(
        settings.model_copy(update={"legacy_simplejwt_issued_before": cut_over})
    )
    admin = imported.id("admin")
    async with application.router.lifespan_context(application), asgi_client(application) as client:
        minted = await client.get(PROFILE, headers=bearer(legacy_token(admin)))
        before = await client.get(PROFILE, headers=bearer(legacy_token(admin, issued=-120)))
    assert (minted.status_code, before.status_code) == (401, 200)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/users/1"),
        ("PATCH", "/api/v1/users/1"),
        ("DELETE", "/api/v1/users/999"),
    ],
)
async def test_staff_routes_refuse_legacy_tokens(
    client: httpx.AsyncClient, imported: DjangoSource, method: str, path: str
) -> None:
    token = legacy_token(imported.id("admin"))
    response = await client.request(
        method, path, headers=bearer(token), json={"first_name": "X"} if method == "PATCH" else None
    )
    assert response.status_code == 401
    ours = await log_in(client, "admin", imported.password("admin"))
    allowed = await client.get("/api/v1/users", headers=bearer(ours.json()["access_token"]))
    assert allowed.status_code == 200  # staff log in again


async def test_the_first_use_of_each_legacy_token_is_in_the_audit_trail(
    app: FastAPI, client: httpx.AsyncClient, imported: DjangoSource
) -> None:
    user_id = imported.id("argon2_user")
    first, second = legacy_token(user_id), legacy_token(user_id)
    for _ in range(2):
        response = await client.get(PROFILE, headers=bearer(first))  # the read path
        assert response.status_code == 200
        response = await client.get("/api/v1/users/profile/email", headers=bearer(first))
        assert response.status_code == 200  # a signed-in route with a database session
    async with resources_of(app).sessionmaker() as db:
        used = (await db.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
    assert [(event.type, event.user_id, event.actor_id) for event in used] == [
        ("legacy_token.used", user_id, user_id)
    ]
    assert set(used[0].details) == {"token_issued_at"}
    assert first not in repr(used[0].details)
    assert (await client.get(PROFILE, headers=bearer(second))).status_code == 200
    async with resources_of(app).sessionmaker() as db:
        count = await db.scalar(select(func.count()).select_from(AuditEvent))
    assert count == 2


async def test_logout_all_and_password_change_end_legacy_tokens(
    client: httpx.AsyncClient, imported: DjangoSource
) -> None:
    name = "argon2_user"
    before = legacy_token(imported.id(name))
    assert (await client.get(PROFILE, headers=bearer(before))).status_code == 200
    ours = (await log_in(client, name, imported.password(name))).json()["access_token"]
    assert (await client.post("/api/v1/auth/logout-all", headers=bearer(ours))).status_code == 204
    after_logout = await client.get(PROFILE, headers=bearer(before))
    assert (after_logout.status_code, after_logout.json()["code"]) == (401, "session_revoked")
    # a token the old service issued later (a second on) still works; a new login does too
    later = legacy_token(imported.id(name), issued=1)
    assert (await client.get(PROFILE, headers=bearer(later))).status_code == 200
    ours = (await log_in(client, name, imported.password(name))).json()["access_token"]
    assert (await client.get(PROFILE, headers=bearer(ours))).status_code == 200

    name = "pbkdf2_default"
    before = legacy_token(imported.id(name))
    assert (await client.get(PROFILE, headers=bearer(before))).status_code == 200
    changed = await client.post(
        "/api/v1/users/profile/password",
        json={"current_password": imported.password(name), "new_password": "a-New-passphrase-77"},
        headers=bearer(before),
    )
    assert changed.status_code == 204
    assert (await client.get(PROFILE, headers=bearer(before))).status_code == 401


async def test_deactivation_ends_legacy_tokens_for_good(
    client: httpx.AsyncClient, app: FastAPI, imported: DjangoSource
) -> None:
    token = legacy_token(imported.id("bcrypt_user"))
    assert (await client.get(PROFILE, headers=bearer(token))).status_code == 200
    root = (await log_in(client, "admin", imported.password("admin"))).json()["access_token"]
    user = f"/api/v1/users/{imported.id('bcrypt_user')}"
    for active in (False, True):
        response = await client.patch(user, json={"is_active": active}, headers=bearer(root))
        assert response.status_code == 200
    assert (await client.get(PROFILE, headers=bearer(token))).status_code == 401


async def verified_ids(app: FastAPI) -> set[int]:
    async with resources_of(app).sessionmaker() as db:
        rows = await db.scalars(select(User.id).where(User.email_verified_at.is_not(None)))
        return set(rows.all())


async def test_emails_verified_only_with_the_flag(
    app: FastAPI, django_source: DjangoSource, media: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Django never checked the addresses: unverified unless the operator vouches for them;
    a re-run with --emails-verified marks the rows it already imported."""
    assert (await import_django(capsys, django_source)).code == 0
    assert await verified_ids(app) == set()
    again = await import_django(capsys, django_source, "--emails-verified")
    assert again.code == 0, again.err
    assert await verified_ids(app) == {user["id"] for user in django_source.users.values()}
