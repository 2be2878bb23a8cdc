"""users.email_verified_at and email_verification_tokens

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

Existing accounts start unverified (NULL): nothing so far proved that anyone reads their
addresses (Django never checked them, and this service did not either). Nothing changes
for them unless REQUIRE_VERIFIED_EMAIL is turned on; an operator who trusts the addresses
marks them with one UPDATE (README, "Email verification").

A verification token is stored as a password-reset token is (one row per account, its
SHA-256 only), with the address it was sent to.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("email_verified_at", sa.DateTime(timezone=True)))
    op.create_table(
        "email_verification_tokens",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_email_verification_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_verification_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_email_verification_tokens_token_hash")),
        sa.UniqueConstraint("user_id", name=op.f("uq_email_verification_tokens_user_id")),
    )


def downgrade() -> None:
    op.drop_table("email_verification_tokens")
    with op.batch_alter_table("users", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("email_verified_at")
