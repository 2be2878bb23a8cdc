"""``GET /metrics``: Prometheus exposition format (not in the OpenAPI schema)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.core import metrics
from app.routers import operation_id

router = APIRouter(include_in_schema=False, generate_unique_id_function=operation_id)


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    content, media_type = metrics.render()
    return Response(content, media_type=media_type)
