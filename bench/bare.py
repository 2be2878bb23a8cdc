"""The framework's ceiling: a bare FastAPI app on the same uvicorn, uvloop and httptools as
the service, without middleware, with one route answering a constant JSON body the size of
a seeded user's profile. ``bench/run`` serves it beside the service and measures both in
the same rounds (``uvicorn bench.bare:app``, see ``command``). The route is at
``/healthz``, so that the readiness probe and the drain after each load (bench/server.py)
work on it unchanged."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response

from app.core.gc_tuning import freeze_startup_objects

# A seeded user's POST /users/profile answer (bench/database.py), field for field.
PROFILE_BODY = {
    "id": 4321,
    "username": "user4321",
    "email": "user4321@example.com",
    "first_name": "Bob",
    "last_name": "ln8bd6ae5c0a",
    "number_phone": "0000004321",
    "avatar": None,
    "date_joined": "2026-11-29T22:47:59.123456Z",
    "last_login": None,
    "is_active": True,
    "is_staff": False,
    "is_superuser": False,
}

PATH = "/healthz"


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # The service's garbage-collector settings (app/core/gc_tuning.py): without them the
    # full collections of a loaded process, not the framework, would set the ceiling.
    freeze_startup_objects()
    yield


app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)


PROFILE_JSON = json.dumps(PROFILE_BODY).encode()


@app.get(PATH)
async def profile() -> Response:
    # The body is constant: encoded once, as the framework's ceiling has no work to do.
    return Response(PROFILE_JSON, media_type="application/json")


def command(port: int) -> list[str]:
    """The uvicorn command line serving ``app`` on ``port`` as ``python -m app serve``
    runs the service: uvloop, httptools, no access log, no proxy headers."""
    import sys
    from pathlib import Path

    return [
        *(sys.executable, "-m", "uvicorn", f"{__name__}:app", "--host", "127.0.0.1"),
        *("--app-dir", str(Path(__file__).resolve().parent.parent)),
        *("--port", str(port), "--loop", "uvloop", "--http", "httptools"),
        *("--no-access-log", "--no-proxy-headers", "--log-level", "warning"),
    ]
