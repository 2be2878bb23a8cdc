"""The framework's ceiling: a bare FastAPI app on the same uvicorn, uvloop and httptools as
the service, without middleware, with one route answering a constant JSON body the size of
a seeded user's profile. ``bench/run`` serves it beside the service and measures both in
the same rounds (``uvicorn bench.bare:app``, see ``command``). The route is at
``/healthz``, so that the readiness probe and the drain after each load (bench/server.py)
work on it unchanged."""

from __future__ import annotations

from fastapi import FastAPI

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
app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get(PATH)
async def profile() -> dict[str, object]:
    return PROFILE_BODY


def command(port: int) -> list[str]:
    """The uvicorn command line serving ``app`` on ``port``: uvloop, httptools, no access
    log (the service's are the same, and it logs through its own middleware)."""
    import sys
    from pathlib import Path

    return [
        *(sys.executable, "-m", "uvicorn", f"{__name__}:app", "--host", "127.0.0.1"),
        *("--app-dir", str(Path(__file__).resolve().parent.parent)),
        *("--port", str(port), "--loop", "uvloop", "--http", "httptools"),
        *("--no-access-log", "--log-level", "warning"),
    ]
