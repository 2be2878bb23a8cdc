"""trigram index for the staff user search (PostgreSQL only)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

The search matches ``'%text%'`` case-insensitively in username, email, first and last
name. One pg_trgm GIN index on the four columns joined by a space
(``app.repositories.users.SEARCH_DOCUMENT_SQL``, the same expression the query filters on)
finds the candidates with a single index scan; the query then checks each column, so a
term spanning two columns does not match. (Four per-column indexes OR-ed in a BitmapOr read
the posting lists of common trigrams such as ``use``/``ser`` once per column: about twice
the time.) SQLite has no such index type: a no-op there. The index is not on the model
(SQLAlchemy cannot declare it portably); alembic/env.py leaves it out of the autogenerate
comparison (app/models/migration_only.py).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Also listed in app/models/migration_only.py; the expression is the repository's
# SEARCH_DOCUMENT_SQL (tests/test_admin.py checks that they agree).
INDEX = "ix_users_search_trgm"
DOCUMENT = "(username || ' ' || email || ' ' || first_name || ' ' || last_name)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(f"CREATE INDEX {INDEX} ON users USING gin ({DOCUMENT} gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
