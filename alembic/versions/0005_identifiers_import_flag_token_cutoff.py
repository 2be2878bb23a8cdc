"""one identifier per account, imported accounts, a per-user token cut-off

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

- ``users.imported``: set by the Django import. Existing rows whose hash is still a Django
  format certainly came from an import; rows with our argon2 hash cannot be told apart
  from accounts created here and are marked as created here (the safe side: a later
  import reports them instead of merging into them, and legacy tokens do not reach them).
- ``users.tokens_valid_after``: tokens issued earlier are refused.
- Emails in one Unicode form (NFC, lower-cased). Two rows that become equal are reported
  and left as they are, never merged.
- ``login_identifiers``: a digest of each email and of each username holding an ``@``
  (NFKC, case-folded), unique: one identifier, one account. Existing rows that clash
  (a username equal to another account's email) are reported; the later account gets no
  claim, and login refuses that identifier as ambiguous until an administrator renames one.

The normalisation functions are copied here, as they were when this migration was written.
"""

import hashlib
import logging
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("alembic.runtime.migration")
BATCH = 5000


def _email(value: str) -> str:
    return unicodedata.normalize("NFC", value.strip().lower())


def _digest(value: str) -> str:
    key = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value.strip()).casefold())
    return hashlib.sha256(key.encode()).hexdigest()


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("imported", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column("users", sa.Column("tokens_valid_after", sa.DateTime(timezone=True)))
    op.create_table(
        "login_identifiers",
        sa.Column("identifier", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_login_identifiers_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("identifier", name=op.f("pk_login_identifiers")),
    )
    op.create_index(
        op.f("ix_login_identifiers_user_id"), "login_identifiers", ["user_id"], unique=False
    )

    users = sa.table(
        "users",
        sa.column("id", sa.BigInteger()),
        sa.column("username", sa.String()),
        sa.column("email", sa.String()),
        sa.column("password", sa.String()),
        sa.column("imported", sa.Boolean()),
    )
    bind = op.get_bind()
    bind.execute(
        users.update().where(~users.c.password.startswith("$argon2")).values(imported=True)
    )
    rows = bind.execute(sa.select(users.c.id, users.c.username, users.c.email).order_by("id"))
    accounts = [(row.id, row.username, row.email) for row in rows]
    left = _normalise_emails(bind, users, accounts)
    # Accounts whose email could not be normalised claim last: the one that holds the
    # normal form keeps the identifier.
    _claim_identifiers(bind, sorted(accounts, key=lambda account: account[0] in left))


def _normalise_emails(
    bind: sa.Connection, users: sa.TableClause, accounts: list[tuple[int, str, str]]
) -> set[int]:
    """Normalise in place (``accounts`` too); the ids left as they were after a clash."""
    taken = {email: user_id for user_id, _, email in accounts}
    left = set()
    changes = []
    for index, (user_id, username, email) in enumerate(accounts):
        normal = _email(email)
        if normal == email:
            continue
        owner = taken.get(normal)
        if owner is not None and owner != user_id:
            logger.warning(
                "user %d: email equals user %d's once normalised (NFC); left as it is",
                user_id,
                owner,
            )
            left.add(user_id)
            continue
        taken[normal] = user_id
        changes.append({"key_id": user_id, "new_email": normal})
        accounts[index] = (user_id, username, normal)
    for start in range(0, len(changes), BATCH):
        bind.execute(
            users.update()
            .where(users.c.id == sa.bindparam("key_id"))
            .values(email=sa.bindparam("new_email")),
            changes[start : start + BATCH],
        )
    return left


def _claim_identifiers(bind: sa.Connection, accounts: list[tuple[int, str, str]]) -> None:
    """Emails first (every account keeps its own email), then usernames holding an @."""
    owner: dict[str, int] = {}
    for field in ("email", "username"):
        for user_id, username, email in accounts:
            value = email if field == "email" else username
            if field == "username" and "@" not in username:
                continue
            digest = _digest(value)
            holder = owner.setdefault(digest, user_id)
            if holder != user_id:
                logger.warning(
                    "user %d: %s is also user %d's login identifier; that identifier stays "
                    "with user %d (rename one of them)",
                    user_id,
                    field,
                    holder,
                    holder,
                )
    claims = sa.table(
        "login_identifiers",
        sa.column("identifier", sa.String()),
        sa.column("user_id", sa.BigInteger()),
    )
    rows = [{"identifier": digest, "user_id": user_id} for digest, user_id in owner.items()]
    for start in range(0, len(rows), BATCH):
        bind.execute(claims.insert(), rows[start : start + BATCH])


def downgrade() -> None:
    op.drop_index(op.f("ix_login_identifiers_user_id"), table_name="login_identifiers")
    op.drop_table("login_identifiers")
    # The rebuilt table must keep AUTOINCREMENT (reflection does not carry it), or ids of
    # deleted users would be handed out again on SQLite.
    with op.batch_alter_table("users", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("tokens_valid_after")
        batch.drop_column("imported")
