from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from alembic import context
from app.core.config import DatabaseSettings
from app.models import Base
from app.models.migration_only import include_object

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata

# The key of the PostgreSQL advisory lock migrations run under (any constant bigint that
# nothing else on the database uses): replicas that start together migrate one at a time.
MIGRATION_LOCK_KEY = int.from_bytes(b"usersvcm", "big")


def _database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or DatabaseSettings().database_url


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
        compare_type=True,
        compare_server_default=True,
        literal_binds=connection is None,
        include_object=include_object,
    )


def run_migrations_offline() -> None:
    _configure(url=_database_url())
    with context.begin_transaction():
        context.run_migrations()


@contextmanager
def _migration_lock(connection: Connection) -> Iterator[None]:
    """Hold PostgreSQL's session-level advisory lock MIGRATION_LOCK_KEY (waiting for it) from
    before Alembic reads alembic_version until the migrations are committed, so processes
    that migrate at the same time take turns: the later ones find the schema at head. No-op
    on SQLite.

    The statement autobegins a transaction (SQLAlchemy 2); it is committed at once (the lock
    belongs to the session, not to the transaction), because Alembic takes a connection
    already in a transaction for the caller's and would then neither begin nor commit its
    own: the migrations would be rolled back when the connection closes.
    """
    if connection.dialect.name != "postgresql":
        yield
        return
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    connection.commit()
    try:
        yield
    finally:
        if not connection.invalidated:  # a lost connection has released it already
            connection.rollback()  # whatever a failure left open, so the unlock can run
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()


def _run_sync(connection: Connection) -> None:
    with _migration_lock(connection):
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


async def run_migrations_online() -> None:
    # hide_parameters: a failed statement's message never carries its values.
    engine = create_async_engine(_database_url(), poolclass=NullPool, hide_parameters=True)
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
