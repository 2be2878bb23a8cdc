"""How long ``python -m app import-django`` takes for 100,000 users.

Builds a Django-shaped source table with the test Django project's own migrations
(tests/django_project, needs the ``test`` extra), fills it with N rows (1% with an avatar
file) by executemany, then times a first import into an empty, migrated database and a
second, idempotent one. Prints the figures; asserts nothing about them.

    python -m bench.import_django [--rows 100000] [--backend sqlite|postgresql|both]

(from the repository's root).

PostgreSQL: the server at TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/
postgres); scratch databases are created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from app import cli
from bench.database import database_url, scratch_database

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# One real Django hash for every row: hashing is not what is measured.
HASH = "pbkdf2_sha256$1000000$W3st1a3upQmM9Y4dqNW7YL$nGeqzLGfOs0iGOMFgyFAF1d7h0QxSYqiyB12Q4ajB3o="

DATETIMES = {"last_login", "date_joined"}


def django_schema(env: dict[str, str]) -> str:
    """Apply the Django project's migrations; return the users table name."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests/django_project/build_source.py"), "--schema-only"],
        env={**os.environ, "DJANGO_SECRET_KEY": "bench", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    table: str = json.loads(result.stdout)["table"]
    return table


def rows(count: int, media: Path) -> list[dict[str, object]]:
    (media / "avatars").mkdir(parents=True, exist_ok=True)
    joined = datetime(2020, 1, 1, tzinfo=UTC)
    data: list[dict[str, object]] = []
    for i in range(1, count + 1):
        avatar = ""
        if i % 100 == 0:
            avatar = f"avatars/user{i}.png"
            (media / avatar).write_bytes(b"\x89PNG\r\n\x1a\n" + str(i).encode() * 64)
        data.append(
            {
                "id": i,
                "password": HASH,
                "last_login": joined + timedelta(days=i % 900) if i % 3 else None,
                "is_superuser": i == 1,
                "username": f"user{i}",
                "first_name": f"First{i}",
                "last_name": "Last",
                "email": f"User{i}@Example.com",
                "is_staff": i < 10,
                "is_active": i % 50 != 0,
                "date_joined": joined + timedelta(minutes=i),
                "number_phone": f"{5550000000 + i}",
                "avatar": avatar,
            }
        )
    return data


async def fill(url: str, table_name: str, data: list[dict[str, object]]) -> None:
    engine = create_async_engine(url)
    table = sa.Table(
        table_name,
        sa.MetaData(),
        *(
            sa.Column(name, sa.DateTime(timezone=True) if name in DATETIMES else None)
            for name in data[0]
        ),
    )
    async with engine.begin() as connection:
        await connection.execute(sa.insert(table), data)
    await engine.dispose()


def timed_import(target_url: str, source_url: str, media_root: Path, work: Path) -> float:
    os.environ.update(
        DATABASE_URL=target_url,
        MEDIA_ROOT=str(work / "media"),
        SECRET_KEY="bench-secret-key-that-is-long-enough-0123456789",
    )
    started = time.perf_counter()
    code = cli.main(["import-django", "--source", source_url, "--media-root", str(media_root)])
    elapsed = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"import failed with exit code {code}")
    return elapsed


def run(backend: str, count: int) -> None:
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
        work = Path(directory)
        os.chdir(work)
        media = work / "django-media"
        if backend == "sqlite":
            source_file = work / "django.sqlite3"
            table = django_schema({"DJANGO_DB_NAME": str(source_file)})
            source_url = f"sqlite:///{source_file}"
            fill_url = f"sqlite+aiosqlite:///{source_file}"
            target_url = f"sqlite+aiosqlite:///{work / 'userservice.db'}"
        else:
            source_db = stack.enter_context(scratch_database(PG_ADMIN_URL))
            table = django_schema({"DJANGO_DB_ENGINE": "postgresql", "DJANGO_DB_NAME": source_db})
            source_url = database_url(PG_ADMIN_URL, source_db)
            fill_url = database_url(PG_ADMIN_URL, source_db, "postgresql+asyncpg")
            target_db = stack.enter_context(scratch_database(PG_ADMIN_URL))
            target_url = database_url(PG_ADMIN_URL, target_db, "postgresql+asyncpg")
        started = time.perf_counter()
        asyncio.run(fill(fill_url, table, rows(count, media)))
        print(
            f"source: {count} rows in {table} ({backend}) built in "
            f"{time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        first = timed_import(target_url, source_url, media, work)
        second = timed_import(target_url, source_url, media, work)
        print(
            f"{backend}: import of {count} users {first:.1f} s "
            f"({count / first:,.0f} rows/s); re-run (no changes) {second:.1f} s"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args(argv)
    for name in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        run(name, args.rows)


if __name__ == "__main__":
    main()
