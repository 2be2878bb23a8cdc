"""audit_events; auth_sessions.ip, user_agent and expires_at

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

Sessions started before this revision have no address or User-Agent (NULL). Their
``expires_at`` is back-filled from their last rotation (or start) plus 14 days, the default
REFRESH_TOKEN_TTL: a deployment with another lifetime sees those sessions listed until then,
while their refresh tokens keep the expiry they were issued with.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", _ID, nullable=True),
        sa.Column("actor_id", _ID, nullable=True),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=256), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_audit_events_user_id_id"), "audit_events", ["user_id", "id"])
    op.create_index(op.f("ix_audit_events_ip_id"), "audit_events", ["ip", "id"])
    op.create_index(op.f("ix_audit_events_type_id"), "audit_events", ["type", "id"])
    op.create_index(op.f("ix_audit_events_at"), "audit_events", ["at"])

    op.add_column("auth_sessions", sa.Column("ip", sa.String(length=45), nullable=True))
    op.add_column("auth_sessions", sa.Column("user_agent", sa.String(length=256), nullable=True))
    op.add_column("auth_sessions", sa.Column("expires_at", sa.DateTime(timezone=True)))
    last_issued: sa.ColumnElement[Any] = sa.func.coalesce(
        sa.column("refreshed_at"), sa.column("created_at")
    )
    expiry: sa.ColumnElement[Any]
    if op.get_bind().dialect.name == "sqlite":
        expiry = sa.func.datetime(last_issued, "+14 days")
    else:
        expiry = last_issued + sa.text("interval '14 days'")
    op.execute(
        sa.table("auth_sessions", sa.column("expires_at")).update().values(expires_at=expiry)
    )
    with op.batch_alter_table("auth_sessions") as batch:
        batch.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("auth_sessions") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("user_agent")
        batch.drop_column("ip")
    op.drop_table("audit_events")
