"""The per-request session: commit or roll back, and the callbacks that follow the outcome."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from app.core.db import after_commit, after_rollback
from app.core.errors import AppError, RefreshTokenReused, UserNotFound
from app.dependencies import SessionDep


@pytest.mark.parametrize(
    ("error", "status", "outcome"),
    [
        (None, 200, "committed"),
        (UserNotFound(), 404, "rolled back"),  # an error the API answers on purpose
        (RuntimeError("bug"), 500, "rolled back"),
        (RefreshTokenReused(), 401, "committed"),  # keeps its changes although it fails
    ],
)
async def test_callbacks_follow_the_transaction_outcome(
    app: FastAPI, client: httpx.AsyncClient, error: Exception | None, status: int, outcome: str
) -> None:
    outcomes: list[str] = []

    async def committed() -> None:
        outcomes.append("committed")

    async def rolled_back() -> None:
        outcomes.append("rolled back")

    async def handler(session: SessionDep) -> dict[str, str]:
        after_commit(session, committed)
        after_rollback(session, rolled_back)
        if error is not None:
            raise error
        return {}

    app.add_api_route("/test-session", handler)
    response = await client.get("/test-session")
    assert response.status_code == status
    assert outcomes == [outcome]
    if isinstance(error, AppError):
        assert response.json()["code"] == error.code
