"""Import the users of the replaced Django service (``python -m app import-django``).

Two passes over the source table, in batches, never a round trip per row:

1. ids, usernames and emails only: rows whose id belongs to an account created here (never
   merged into: its owner is not the Django user), and rows whose username (NFKC) or login
   identifier (email, or a username holding an @, compared as login compares them) equals
   another row's or belongs to another account of this service, are failures.
2. every column: each row is validated with the API's own field rules (``app.schemas.fields``;
   a password hash whose work factor is out of bounds too), compared with the row of the same
   id here and inserted (marked ``imported``) or updated (one executemany per batch); avatar
   files are checked and re-encoded as uploads are, into our media storage.

The session's transaction holds every write; the caller commits only when ``report.commit``
(not a dry run, and no failure unless ``skip_invalid``), and then the id counter has been
moved past the highest source id. Django password hashes are kept as stored:
``PASSWORD_CONTEXT`` verifies them and upgrades them to argon2id on the next login.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from app.core.config import AVATAR_PIXELS_CEILING
from app.core.errors import InvalidImage
from app.core.identifiers import claimed_identifiers, normalize_email, normalize_username
from app.core.images import CONTENT_TYPES, reencode
from app.core.logging import database_error_facts
from app.core.security import hash_cost_problem, is_native_password_hash
from app.models.base import utcnow
from app.models.user import PASSWORD_HASH_MAX
from app.repositories import password_reset as password_reset_repo
from app.repositories import user_import
from app.schemas.fields import Email, PersonName, PhoneNumber, Username, reject_control_characters

DEFAULT_BATCH_SIZE = 5000
AVATAR_DIRECTORY = "avatars"
# Names of copied avatars derive from the user id and the file's content, so a re-run finds
# the file it copied before and leaves the row unchanged.
_AVATAR_NAMESPACE = uuid.UUID("5b0f7d3e-8f7c-4b8e-9a0e-2f1f5d3c9a41")
_MAX_ID = 2**63 - 1
# The AbstractUser columns; number_phone and avatar come from the service's own model.
REQUIRED_COLUMNS = (
    "id",
    "password",
    "last_login",
    "is_superuser",
    "username",
    "first_name",
    "last_name",
    "email",
    "is_staff",
    "is_active",
    "date_joined",
)
OPTIONAL_COLUMNS = ("number_phone", "avatar")
COMPARED_COLUMNS = (
    "username",
    "password",
    "email",
    "first_name",
    "last_name",
    "number_phone",
    "avatar",
    "date_joined",
    "last_login",
    "is_active",
    "is_staff",
    "is_superuser",
)

Progress = Callable[[str], None]
LOCAL_ACCOUNT = "id belongs to an account created here"


class DjangoImportError(Exception):
    """The import cannot start or finish (source unreachable, no such table, write conflict)."""


@dataclass(frozen=True, slots=True)
class ImportOptions:
    source_url: str
    table: str | None = None
    media_root: Path | None = None  # the Django service's MEDIA_ROOT
    target_media_root: Path = Path("media")  # ours (MEDIA_ROOT)
    avatar_max_bytes: int = 2 * 1024 * 1024  # ours (AVATAR_MAX_BYTES, AVATAR_MAX_PIXELS)
    avatar_max_pixels: int = AVATAR_PIXELS_CEILING
    dry_run: bool = False
    skip_invalid: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    # Mark the imported addresses verified (Django never checked them: off by default).
    emails_verified: bool = False


@dataclass(frozen=True, slots=True)
class RowProblem:
    row_id: int
    reason: str


@dataclass(slots=True)
class ImportReport:
    table: str
    dry_run: bool
    skip_invalid: bool
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failures: list[RowProblem] = field(default_factory=list)
    avatar_warnings: list[RowProblem] = field(default_factory=list)
    copied_files: list[Path] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len({problem.row_id for problem in self.failures})

    @property
    def commit(self) -> bool:
        """Whether the caller should commit what the import wrote."""
        return not self.dry_run and (self.skip_invalid or not self.failures)

    def lines(self) -> list[str]:
        lines: list[str] = []
        if self.failures:
            lines.append(f"{self.skipped} row(s) cannot be imported as they are:")
            lines += [f"  row {p.row_id}: {p.reason}" for p in self.failures]
        if self.avatar_warnings:
            lines.append(f"{len(self.avatar_warnings)} avatar(s) left empty:")
            lines += [f"  row {p.row_id}: {p.reason}" for p in self.avatar_warnings]
        if self.dry_run:
            outcome = "dry run: nothing written"
        elif self.commit:
            outcome = "written"
        else:
            outcome = "nothing written (fix the rows above or use --skip-invalid)"
        lines.append(
            f"{self.table}: read {self.read}, created {self.created}, updated {self.updated}, "
            f"unchanged {self.unchanged}, skipped {self.skipped}; {outcome}"
        )
        return lines


def _sane_work_factor(stored_hash: str) -> str:
    problem = hash_cost_problem(stored_hash)
    if problem is not None:
        raise ValueError(f"password hash refused: {problem}")
    return stored_hash


class ImportedUser(BaseModel):
    """One source row, checked with the rules the API applies to the same fields."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[StrictInt, Field(gt=0, le=_MAX_ID)]
    username: Username
    password: Annotated[
        str,
        AfterValidator(reject_control_characters),
        Field(min_length=1, max_length=PASSWORD_HASH_MAX),
        AfterValidator(_sane_work_factor),
    ]
    email: Email
    first_name: PersonName
    last_name: PersonName
    number_phone: PhoneNumber
    avatar: Annotated[str, AfterValidator(reject_control_characters)]
    date_joined: datetime
    last_login: datetime | None
    is_active: bool
    is_staff: bool
    is_superuser: bool


def _claims(username: object, email: object) -> dict[str, str]:
    """The login identifiers a source row would claim (see `claimed_identifiers`)."""
    if not isinstance(username, str) or not isinstance(email, str):
        return {}
    return claimed_identifiers(normalize_username(username), normalize_email(email))


def _utc(value: datetime | None) -> datetime | None:
    # Django stores UTC (USE_TZ=True); SQLite gives it back naive.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def async_source_url(url: str) -> sa.URL:
    """A SQLite or PostgreSQL URL in any usual spelling, with our async driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DjangoImportError(f"--source is not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if not database or database == ":memory:" or not Path(database).is_file():
            raise DjangoImportError(f"source SQLite database not found: {database!r}")
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg")
    raise DjangoImportError(f"--source must be a sqlite:/// or postgresql:// URL, not {backend}")


def _guess_table(tables: Iterable[str]) -> str:
    candidates = sorted(name for name in tables if name.endswith("_users"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DjangoImportError("no '<app>_users' table in the source database: use --table")
    raise DjangoImportError(
        f"several candidate tables ({', '.join(candidates)}): choose one with --table"
    )


async def _source_table(connection: AsyncConnection, name: str | None) -> sa.Table:
    def inspect(sync_connection: sa.Connection) -> tuple[str, set[str]]:
        inspector = sa.inspect(sync_connection)
        table = name or _guess_table(inspector.get_table_names())
        if not inspector.has_table(table):
            raise DjangoImportError(f"no table {table!r} in the source database")
        return table, {column["name"] for column in inspector.get_columns(table)}

    table_name, columns = await connection.run_sync(inspect)
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise DjangoImportError(f"table {table_name!r} lacks the columns {', '.join(missing)}")
    # Declared types, not reflected ones: SQLite's text datetimes and integer booleans are
    # converted by SQLAlchemy's result processing.
    types: dict[str, Any] = {
        "id": sa.BigInteger(),
        "last_login": sa.DateTime(timezone=True),
        "date_joined": sa.DateTime(timezone=True),
        "is_superuser": sa.Boolean(),
        "is_staff": sa.Boolean(),
        "is_active": sa.Boolean(),
    }
    present = [*REQUIRED_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in columns)]
    return sa.Table(
        table_name,
        sa.MetaData(),
        *(sa.Column(column, types.get(column, sa.String())) for column in present),
    )


async def _batches(
    connection: AsyncConnection, statement: sa.Select[Any], size: int
) -> AsyncIterator[Sequence[sa.Row[Any]]]:
    result = await connection.stream(statement.execution_options(yield_per=size))
    async for partition in result.partitions(size):
        yield partition


def _reasons(exc: ValidationError) -> str:
    # loc and msg only: never the input (the row holds a password hash).
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


class _Checker:
    """Pass 1: source ids that belong to accounts created here; usernames (NFKC) and login
    identifiers (emails, usernames holding an @: see `claimed_identifiers`) equal after
    normalisation, within the source and against our accounts."""

    def __init__(self, ours: list[tuple[int, str, bool]], our_claims: dict[str, int]) -> None:
        self.usernames: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)
        self.claims: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)
        self.source_ids: set[int] = set()
        self.max_id = 0
        self._local_ids = {user_id for user_id, _, imported in ours if not imported}
        self._our_username = {username: user_id for user_id, username, _ in ours}
        self._our_claims = our_claims

    def add(self, row_id: int, username: object, email: object) -> None:
        self.source_ids.add(row_id)
        self.max_id = max(self.max_id, row_id)
        if isinstance(username, str):
            self.usernames[normalize_username(username)].append((row_id, "username"))
        for digest, what in _claims(username, email).items():
            self.claims[digest].append((row_id, what))

    def problems(self) -> list[RowProblem]:
        local = self.source_ids & self._local_ids
        problems = [RowProblem(row_id, LOCAL_ACCOUNT) for row_id in local]
        # Our accounts that the import rewrites release what they hold now.
        rewritten = self.source_ids - local
        for groups, ours in ((self.usernames, self._our_username), (self.claims, self._our_claims)):
            for key, holders in groups.items():
                problems.extend(_clashes(holders))
                owner = ours.get(key)
                if owner is not None and owner not in rewritten:
                    problems.extend(
                        RowProblem(
                            row_id, f"{what} already belongs to user {owner} of this service"
                        )
                        for row_id, what in holders
                        if row_id != owner
                    )
        return list(dict.fromkeys(problems))  # a username holding an @ is checked twice


def _clashes(holders: list[tuple[int, str]]) -> list[RowProblem]:
    """Source rows that share one identifier: each is reported with the others."""
    problems = []
    for row_id, what in holders:
        others = [(other, other_what) for other, other_what in holders if other != row_id]
        if not others:
            continue
        ids = ", ".join(str(other) for other, _ in others)
        other_whats = sorted({other_what for _, other_what in others})
        whose = "" if other_whats == [what] else f"the {' or '.join(other_whats)} of "
        problems.append(
            RowProblem(row_id, f"{what} equal after normalisation to {whose}row(s) {ids}")
        )
    return problems


async def _check_duplicates(
    db: AsyncSession, source: AsyncConnection, table: sa.Table, options: ImportOptions
) -> tuple[_Checker, list[RowProblem]]:
    checker = _Checker(
        await user_import.ids_usernames_imported(db),
        await user_import.identifier_owners(db),
    )
    statement = sa.select(table.c.id, table.c.username, table.c.email).order_by(table.c.id)
    async for batch in _batches(source, statement, options.batch_size):
        for row in batch:
            checker.add(row.id, row.username, row.email)
    return checker, checker.problems()


_EXTENSIONS = tuple(CONTENT_TYPES)


def store_avatar(
    source: Path, user_id: int, options: ImportOptions, *, dry_run: bool
) -> tuple[str, bool]:
    """Check and re-encode one avatar as an upload is (type by content, size, pixels,
    metadata stripped) and store it in our media; return its relative path and whether a
    file was created. The only place that writes avatar files during an import: it is where
    the avatar storage interface plugs in. Raises InvalidImage for a refused file.

    The name is server-generated (``avatars/<uuid>.<ext>``), derived from the user id and the
    source file's content, so that a re-run finds the file it wrote and re-encodes nothing.
    """
    if source.stat().st_size > options.avatar_max_bytes:
        raise InvalidImage("file_too_large", f"The file exceeds {options.avatar_max_bytes} bytes.")
    data = source.read_bytes()
    name = uuid.uuid5(_AVATAR_NAMESPACE, f"{user_id}:{hashlib.sha256(data).hexdigest()}").hex
    for extension in _EXTENSIONS:
        relative = f"{AVATAR_DIRECTORY}/{name}.{extension}"
        if (options.target_media_root / relative).is_file():
            return relative, False
    image = reencode(data, options.avatar_max_pixels)
    relative = f"{AVATAR_DIRECTORY}/{name}.{image.extension}"
    if dry_run:
        return relative, False
    target = options.target_media_root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(image.data)
    partial.replace(target)
    return relative, True


def _import_avatar(
    row_id: int, stored: str, options: ImportOptions, report: ImportReport, copy: bool
) -> str | None:
    """Our relative avatar path for Django's ``avatar`` value, or None (with a warning)."""
    if not stored:
        return None
    if options.media_root is None:
        report.avatar_warnings.append(RowProblem(row_id, "no --media-root given"))
        return None
    root = options.media_root.resolve()
    source = (root / stored).resolve()
    if not source.is_relative_to(root):
        report.avatar_warnings.append(RowProblem(row_id, "avatar path leaves --media-root"))
        return None
    if not source.is_file():
        report.avatar_warnings.append(RowProblem(row_id, f"avatar file not found: {stored}"))
        return None
    try:
        relative, created = store_avatar(source, row_id, options, dry_run=not copy)
    except InvalidImage as exc:
        report.avatar_warnings.append(RowProblem(row_id, f"avatar {stored} refused: {exc.detail}"))
        return None
    if created:
        report.copied_files.append(options.target_media_root / relative)
    return relative


def _prepare_batch(
    batch: Sequence[sa.Row[Any]],
    failed: set[int],
    options: ImportOptions,
    report: ImportReport,
) -> list[dict[str, Any]]:
    """Validate a batch and copy its avatars (blocking file I/O: runs in a worker thread)."""
    valid: list[dict[str, Any]] = []
    for row in batch:
        data = dict(row._mapping)
        data.setdefault("number_phone", "")
        data["number_phone"] = data["number_phone"] or ""
        data["avatar"] = data.get("avatar") or ""
        try:
            user = ImportedUser.model_validate(data)
        except ValidationError as exc:
            report.failures.append(RowProblem(row.id, _reasons(exc)))
            failed.add(row.id)
            continue
        if user.username != data["username"]:
            report.failures.append(RowProblem(user.id, "username changes under NFKC normalisation"))
            failed.add(user.id)
            continue
        if user.id in failed:
            continue
        values = user.model_dump()
        values["date_joined"] = _utc(user.date_joined)
        values["last_login"] = _utc(user.last_login)
        valid.append(values)
    # Once nothing is going to be written, no file is copied either (the paths still are
    # computed, so the report counts what a clean run would do).
    copy = not options.dry_run and (options.skip_invalid or not failed)
    for values in valid:
        values["avatar"] = _import_avatar(values["id"], values["avatar"], options, report, copy)
    return valid


def _merge(values: dict[str, Any], ours: dict[str, Any] | None) -> dict[str, Any] | None:
    """The update to make (None: nothing changed). What this service set after an earlier
    import wins over the source: an upgraded or changed password, a later last_login."""
    if ours is None:
        return values
    if is_native_password_hash(ours["password"]):
        values["password"] = ours["password"]
    if ours["last_login"] is not None and (
        values["last_login"] is None or ours["last_login"] > values["last_login"]
    ):
        values["last_login"] = ours["last_login"]
    changed = any(values[column] != ours[column] for column in COMPARED_COLUMNS)
    return values if changed else None


async def import_django_users(
    db: AsyncSession, options: ImportOptions, progress: Progress | None = None
) -> ImportReport:
    """Read the Django users table at ``options.source_url`` and write it into ours through
    ``session`` (never committed here: commit when ``report.commit``)."""
    say = progress or (lambda _message: None)
    engine = create_async_engine(
        async_source_url(options.source_url), poolclass=NullPool, hide_parameters=True
    )
    try:
        async with engine.connect() as source:
            table = await _source_table(source, options.table)
            report = ImportReport(
                table=table.name, dry_run=options.dry_run, skip_invalid=options.skip_invalid
            )
            say(f"checking {table.name} for duplicates")
            checker, problems = await _check_duplicates(db, source, table, options)
            report.failures.extend(problems)
            failed = {problem.row_id for problem in problems}
            total = len(checker.source_ids)
            say(f"{total} rows; {len(failed)} duplicate(s) so far")
            highest = await _write(db, source, table, options, report, failed, total, say)
            if report.commit:
                # Past every source id, skipped rows included (and rows added to the source
                # between the passes): an account registered here never gets an id that a
                # later import of a fixed row would claim.
                await user_import.move_id_counter_past(db, max(checker.max_id, highest))
    # Named, never quoted: the messages of database errors can hold row values (hashes).
    except IntegrityError as exc:
        raise DjangoImportError(
            "a unique constraint failed while writing (an email or username moved between "
            f"accounts?); nothing was written: {database_error_facts(exc)}"
        ) from None
    except DBAPIError as exc:
        raise DjangoImportError(
            f"database error; nothing was written: {database_error_facts(exc)}"
        ) from None
    except OSError as exc:
        raise DjangoImportError(f"cannot copy an avatar; nothing was written: {exc}") from None
    finally:
        await engine.dispose()
    if not report.commit:
        _remove(report.copied_files)
    report.failures.sort(key=lambda problem: problem.row_id)
    return report


async def _write(
    db: AsyncSession,
    source: AsyncConnection,
    table: sa.Table,
    options: ImportOptions,
    report: ImportReport,
    failed: set[int],
    total: int,
    say: Progress,
) -> int:
    """Pass 2; returns the highest source id it read."""
    highest = 0
    statement = sa.select(table).order_by(table.c.id)
    async for batch in _batches(source, statement, options.batch_size):
        report.read += len(batch)
        highest = max(highest, batch[-1].id)
        rows = await asyncio.to_thread(_prepare_batch, batch, failed, options, report)
        writing = not options.dry_run and (options.skip_invalid or not failed)
        ours = await user_import.rows_in_id_range(db, batch[0].id, batch[-1].id)
        new: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        new_passwords: list[int] = []  # accounts whose password the source changed
        new_emails: list[int] = []  # accounts whose address the source changed
        imported_ids: list[int] = []  # every valid, imported row of the batch
        for values in rows:
            existing = ours.get(values["id"])
            if existing is not None and not existing["imported"]:
                # Created here since pass 1: never merged into.
                report.failures.append(RowProblem(values["id"], LOCAL_ACCOUNT))
                failed.add(values["id"])
                continue
            imported_ids.append(values["id"])
            update = _merge(values, existing)
            if update is None:
                report.unchanged += 1
            elif existing is None:
                new.append({**update, "imported": True})
            else:
                changed.append(update)
                if update["password"] != existing["password"]:
                    new_passwords.append(update["id"])
                if update["email"] != existing["email"]:
                    new_emails.append(update["id"])
        report.created += len(new)
        report.updated += len(changed)
        if writing:
            # Updates first: a row may release an email that a new row takes.
            await user_import.update_many(db, changed)
            await user_import.insert_many(db, new)
            await user_import.reclaim_identifiers_many(db, [*changed, *new])
            # A new password or a new address cancels a pending reset link, as anywhere:
            # a link sent to the old address must not reset the account.
            await password_reset_repo.delete_for_users(db, sorted({*new_passwords, *new_emails}))
            # A new address from the source is not one this service saw verified.
            await user_import.set_emails_verified(db, new_emails, None)
            if options.emails_verified:
                await user_import.set_emails_verified(db, imported_ids, utcnow())
        say(f"{report.read}/{total} rows read")
    await db.flush()
    return highest


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
