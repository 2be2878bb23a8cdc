"""What start-up builds, in one typed container: `AppResources`.

The lifespan (`app.main.create_app`) enters `AppResources.open`, which builds everything
once per worker and owns its clean-up, and attaches the result to the app with
`set_resources`. Requests read it through one dependency, `app.dependencies.get_resources`
(and the profile's hot path through `resources_of`, see there); tests through
`resources_of` too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from limits.aio.storage import Storage
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.applications import Starlette

from app.core.background import BackgroundWork
from app.core.config import Settings
from app.core.db import create_engine, create_read_sessionmaker, create_sessionmaker
from app.core.db_errors import is_database_unavailable
from app.core.encryption import DataKeys
from app.core.images import ImageProcessor
from app.core.metrics import track_pool
from app.core.security import LegacyTokenCodec, PasswordHasher, TokenCodec
from app.core.storage import MediaStorage, create_media_storage
from app.mail.relay import EmailRelay, start_email_relay
from app.models.mfa import TotpCredential
from app.repositories.auth_sessions import SessionRotator
from app.repositories.driver import open_driver_connections
from app.repositories.live_users import LiveUserReader
from app.services.housekeeping import Housekeeper
from app.services.search_probe import TrigramStats
from app.services.throttle import Throttle, create_storage


@dataclass(frozen=True, slots=True, kw_only=True)
class AppResources:
    """Everything the service builds at start-up and shares between requests.

    Frozen: nothing replaces a part while requests run. A test that needs another part
    (a throttle with other limits, say) attaches a copy:
    ``set_resources(app, dataclasses.replace(resources_of(app), throttle=...))``.
    """

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    """Sessions for requests that write (`app.core.db.committing_db`)."""
    read_sessionmaker: async_sessionmaker[AsyncSession]
    """Autocommit sessions for requests that only read."""
    password_hasher: PasswordHasher
    token_codec: TokenCodec
    legacy_token_codec: LegacyTokenCodec | None
    """The replaced service's tokens, when LEGACY_SIMPLEJWT_SIGNING_KEY is set."""
    throttle: Throttle
    throttle_storage: Storage
    """The throttle's counters (memory or Redis), shared by every `Throttle` over it."""
    media_storage: MediaStorage
    image_processor: ImageProcessor
    live_user_reader: LiveUserReader | None
    """The signed-in user's read on PostgreSQL (prepared statements on the driver); None
    on other databases, where the read goes through `read_sessionmaker`."""
    session_rotator: SessionRotator | None
    """The refresh token's rotation on PostgreSQL, on the same driver connections; None on
    other databases, where `auth_sessions.refresh` rotates in a unit of work of its own."""
    trigram_stats: TrigramStats
    email_relay: EmailRelay
    """Delivers the email outbox in the background (started here, stopped first)."""
    background: BackgroundWork
    """Work requests start and do not wait for (`app.core.background`)."""
    housekeeper: Housekeeper
    """Purges the audit trail past AUDIT_RETENTION_DAYS, hourly."""
    data_keys: DataKeys
    """Seals TOTP secrets (DATA_ENCRYPTION_KEY), built on first use."""

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[AppResources]:
        """Build everything, and on exit close what holds connections or threads: the
        driver connections, the engine's pool, the hashing and image thread pools. Whatever
        was built before a failure is closed too."""
        async with AsyncExitStack() as cleanup:
            engine = create_engine(settings)
            cleanup.push_async_callback(engine.dispose)
            await check_data_key(engine, settings)
            track_pool(engine)
            password_hasher = PasswordHasher(settings.password_hash_threads)
            cleanup.callback(password_hasher.close)
            image_processor = ImageProcessor(
                settings.image_threads, settings.avatar_max_bytes, settings.avatar_max_pixels
            )
            cleanup.callback(image_processor.close)
            live_user_reader = session_rotator = None
            if engine.dialect.driver == "asyncpg":
                driver_connections = open_driver_connections(engine, settings)
                cleanup.push_async_callback(driver_connections.close)
                live_user_reader = LiveUserReader(driver_connections)
                session_rotator = SessionRotator(driver_connections)
            throttle_storage = create_storage(settings)
            sessionmaker = create_sessionmaker(engine)
            # Registered last, so it stops first: no delivery outlives the engine.
            email_relay = start_email_relay(settings, sessionmaker)
            cleanup.push_async_callback(email_relay.aclose)
            housekeeper = Housekeeper(sessionmaker, timedelta(days=settings.audit_retention_days))
            housekeeper.start()
            cleanup.push_async_callback(housekeeper.aclose)
            # Last registered, first closed: running work ends before the relay and engine.
            background = BackgroundWork()
            cleanup.push_async_callback(background.aclose)
            yield cls(
                settings=settings,
                engine=engine,
                sessionmaker=sessionmaker,
                read_sessionmaker=create_read_sessionmaker(engine),
                password_hasher=password_hasher,
                token_codec=TokenCodec(settings),
                legacy_token_codec=_legacy_token_codec(settings),
                throttle=Throttle(settings, throttle_storage),
                throttle_storage=throttle_storage,
                media_storage=create_media_storage(settings),
                image_processor=image_processor,
                live_user_reader=live_user_reader,
                session_rotator=session_rotator,
                trigram_stats=TrigramStats(),
                email_relay=email_relay,
                background=background,
                housekeeper=housekeeper,
                data_keys=DataKeys(settings.data_cipher),
            )


async def check_data_key(engine: AsyncEngine, settings: Settings) -> None:
    """In production, refuse to start without DATA_ENCRYPTION_KEY once an account uses
    two-factor sign-in: its secret could not be opened, and sign-in would fail."""
    if settings.environment != "production" or settings.data_encryption_key is not None:
        return
    try:
        async with engine.connect() as connection:
            found = await connection.scalar(select(TotpCredential.user_id).limit(1))
    except Exception as exc:
        # A database that is down at start-up is the readiness probe's to report; the
        # first sign-in that needs the key answers 503 until it is set.
        if not is_database_unavailable(exc):
            raise
        return
    if found is not None:
        raise RuntimeError(
            "DATA_ENCRYPTION_KEY is required: accounts use two-factor sign-in and their "
            "secrets are sealed with it (docs/two-factor.md)"
        )


def _legacy_token_codec(settings: Settings) -> LegacyTokenCodec | None:
    key = settings.legacy_simplejwt_signing_key
    if key is None:
        return None
    return LegacyTokenCodec(
        key.get_secret_value(),
        settings.legacy_simplejwt_access_token_lifetime,
        settings.legacy_simplejwt_issued_before,
    )


def set_resources(app: Starlette, resources: AppResources) -> None:
    app.state.resources = resources


def resources_of(app: Starlette) -> AppResources:
    """The app's resources, once its lifespan has started (AttributeError before)."""
    resources: AppResources = app.state.resources
    return resources
