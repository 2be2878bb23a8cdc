"""trigram indexes for the staff user search (PostgreSQL only)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

The search matches ``column ILIKE '%text%'`` on username, email, first and last name;
pg_trgm GIN indexes on the same expressions let PostgreSQL answer it from the index at a
million users. SQLite has no such index type: a no-op there. The indexes are not on the
model (SQLAlchemy cannot declare them portably); alembic/env.py leaves them out of the
autogenerate comparison (app/models/migration_only.py).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name -> indexed column (the names are listed in app/models/migration_only.py).
TRIGRAM_INDEXES = {
    "ix_users_username_trgm": "username",
    "ix_users_email_trgm": "email",
    "ix_users_first_name_trgm": "first_name",
    "ix_users_last_name_trgm": "last_name",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, column in TRIGRAM_INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON users USING gin ({column} gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in TRIGRAM_INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
