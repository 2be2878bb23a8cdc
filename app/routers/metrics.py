"""``GET /metrics``: Prometheus exposition format (not in the OpenAPI schema)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.core import metrics

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    content, media_type = metrics.render()
    return Response(content, media_type=media_type)
