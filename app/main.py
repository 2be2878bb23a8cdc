"""Application factory: ``uvicorn --factory app.main:create_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from app.core.config import Settings, get_settings
from app.core.gc_tuning import freeze_startup_objects, unfreeze
from app.core.http_errors import install_error_handlers
from app.core.middleware import RequestMiddleware
from app.dependencies import BEARER_SCHEME, SCHEME_READERS
from app.resources import AppResources, set_resources
from app.routers import (
    API_PREFIX,
    activity,
    admin,
    auth,
    health,
    keys,
    media,
    metrics,
    mfa,
    operation_id,
    users,
)
from app.routers.docs import install_docs
from app.routers.pages import install_pages
from app.schemas.auth import LoginForm, LoginRequest
from app.schemas.errors import ErrorResponse

# Room for the multipart framing around the avatar: boundaries, part headers, a long
# filename. The file itself is checked against AVATAR_MAX_BYTES by the handler.
MULTIPART_OVERHEAD = 16 * 1024


def _include(app: FastAPI, router: APIRouter) -> None:
    """``app.include_router(router)`` for a router of path operations, with its routes added
    to the app's own list as they are (complete when declared: prefix, tags, responses,
    route class, operation ids). FastAPI 0.165 keeps an included router as one nested
    route that matches again and keeps its own bookkeeping on every request: 9 of the 44 µs
    of a request to /healthz in process. What is not carried over: the app's
    ``dependency_overrides`` (nothing here uses them) and a router's own lifespan."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"{route!r}: only path operations are added as they are")
    app.router.routes.extend(router.routes)


def _install_index(app: FastAPI, *, expose_docs: bool) -> None:
    """``GET /``: where to go from the root, for whoever opens the bare URL (outside the
    schema, like the pages). The docs links are left out when EXPOSE_DOCS is off."""
    links = {"docs": "/docs", "openapi": "/openapi.json"} if expose_docs else {}
    links["health"] = "/healthz"

    async def index() -> dict[str, str]:
        return dict(links)

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)


# The order of the sections of /docs and /redoc: what a client does first, first (the
# routes themselves are matched in another order, see create_app).
OPENAPI_TAGS = [
    {
        "name": "auth",
        "description": "Register, log in (Authorize), refresh, log out; password reset and "
        "email verification links.",
    },
    {"name": "users", "description": "The signed-in user's own profile, avatar and password."},
    {"name": "two-factor", "description": "The signed-in user's second factor (TOTP)."},
    {"name": "activity", "description": "Sessions and the audit trail of security events."},
    {"name": "admin", "description": "User management: staff read, superusers change."},
    {"name": "keys", "description": "The public keys that verify our tokens (RS256/ES256)."},
    {"name": "health", "description": "Liveness and readiness."},
    {"name": "media", "description": "Uploaded avatars."},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AppResources.open(settings) as resources:
            set_resources(app, resources)
            freeze_startup_objects()
            try:
                yield
            finally:
                unfreeze()

    app = FastAPI(
        title="userservice",
        version="0.1.0",
        description="User management: registration, JWT login, the user's profile and "
        "avatar, and user administration.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        openapi_tags=OPENAPI_TAGS,
        # FastAPI's own OpenTelemetry hooks, off: no OpenTelemetry SDK is configured here
        # (metrics are Prometheus', at /metrics), and asking the global providers whether
        # one is cost 7 % of the instructions of a request to /healthz.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,  # served by install_docs, with local assets
        redoc_url=None,
        openapi_url="/openapi.json" if settings.expose_docs else None,
    )
    install_error_handlers(app)
    # Requests are matched against the routes in this order, each router's routes in turn
    # (twice for the router that matches): the health checks, the profile and the token
    # refresh, the most frequent requests, come first (a refresh behind the activity, MFA
    # and admin routers was matched against 30 routes first: 7 % of its instructions);
    # users before admin, or /users/profile would be taken for /users/{user_id}.
    _include(app, health.router)
    _include(app, users.router)
    _include(app, auth.router)
    # Before admin: its /users/{user_id} must not take /users/profile/sessions.
    _include(app, activity.router)
    _include(app, mfa.router)
    _include(app, admin.router)
    _include(app, keys.router)
    _include(app, metrics.router)
    if settings.expose_docs:
        install_docs(app)
    install_pages(app)  # the pages of the default email links, outside the schema
    _install_index(app, expose_docs=settings.expose_docs)
    _include(app, media.router)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            # Read by the front end: the back-off of a 429/503 and the id to quote in a report.
            expose_headers=["Retry-After", "X-Request-ID"],
            max_age=600,  # one preflight per 10 minutes per URL, not one per request
        )
    # Outermost, one layer: request id, log line, metrics, security headers and the body
    # size limit, so it sees every answer, 413s included.
    app.add_middleware(
        RequestMiddleware,
        max_bytes=settings.max_body_bytes,
        no_store_prefix=API_PREFIX,
        path_limits={
            app.url_path_for("upload_avatar"): settings.avatar_max_bytes + MULTIPART_OVERHEAD
        },
    )
    _include_extra_schemas(app, LoginRequest, LoginForm, ErrorResponse)
    return app


def _include_extra_schemas(app: FastAPI, *models: Any) -> None:
    """Publish models referenced only from ``openapi_extra``, or from no route (the shape of
    every error body), as named components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            _document_scheme_readers(app, schema)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, definition in model_schema.pop("$defs", {}).items():
                    components.setdefault(name, definition)
                components[model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_scheme_readers(app: FastAPI, schema: dict[str, Any]) -> None:
    """The bearer scheme on the operations of routes whose user dependency reads the token
    itself (`SCHEME_READERS`, no sub-dependency FastAPI would document), as FastAPI
    documents it on the others."""
    scheme = BEARER_SCHEME.scheme_name
    for route in app.routes:
        if not (
            isinstance(route, APIRoute)
            and route.include_in_schema
            and _calls(route.dependant, SCHEME_READERS)
        ):
            continue
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes.setdefault(
            scheme, jsonable_encoder(BEARER_SCHEME.model, by_alias=True, exclude_none=True)
        )
        for method in route.methods or ():
            operation = schema["paths"][route.path_format][method.lower()]
            if "security" in operation:
                if {scheme: []} not in operation["security"]:
                    operation["security"].append({scheme: []})
                continue
            # Where FastAPI puts it: before the parameters, else last.
            members = list(operation.items())
            at = list(operation).index("parameters") if "parameters" in operation else len(members)
            operation.clear()
            operation.update([*members[:at], ("security", [{scheme: []}]), *members[at:]])


def _calls(dependant: Dependant, calls: frozenset[Any]) -> bool:
    return any(sub.call in calls or _calls(sub, calls) for sub in dependant.dependencies)
