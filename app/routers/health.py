"""Probes for an orchestrator or load balancer: liveness (no I/O) and readiness (database)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from app.core.db import check_database
from app.core.errors import ServiceUnavailable
from app.dependencies import ResourcesDep
from app.routers import operation_id
from app.routers.responses import error_responses

router = APIRouter(tags=["health"], generate_unique_id_function=operation_id)


class Health(BaseModel):
    status: str = "ok"


# Pre-encoded: a liveness probe needs no validation or serialisation per call.
_HEALTHY = Health().model_dump_json().encode()


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Response:
    return Response(_HEALTHY, media_type="application/json")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: the database answers within READINESS_TIMEOUT",
    responses=error_responses(
        ServiceUnavailable,
        descriptions={503: "The database did not answer in time: try again after Retry-After."},
    ),
)
async def readyz(resources: ResourcesDep) -> Health:
    await check_database(resources.engine, resources.settings.readiness_timeout)
    return Health()
