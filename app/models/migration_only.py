"""Schema objects that exist only in migrations, and the autogenerate filter that says so.

The PostgreSQL trigram index of the staff user search (migration 0003) cannot be declared
portably on the model (SQLite has no GIN): alembic/env.py, and the test that checks the
models against the migrations, leave it out of the comparison.
"""

from __future__ import annotations

from typing import Any

MIGRATION_ONLY_INDEXES = frozenset({"ix_users_search_trgm"})


def include_object(
    _object: Any, name: str | None, type_: str, _reflected: bool, _compare_to: Any
) -> bool:
    """Alembic's ``include_object`` hook: everything but the migration-only indexes."""
    return not (type_ == "index" and name in MIGRATION_ONLY_INDEXES)
