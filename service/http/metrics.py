"""GET /metrics: the gauges PostgreSQL holds sampled, then every metric as Prometheus text."""

from __future__ import annotations

from prometheus_client import generate_latest
from starlette.requests import Request
from starlette.responses import Response

from service.http.services import services
from service.metrics import Metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def get_metrics(request: Request) -> Response:
    metrics: Metrics = services(request).metrics
    await metrics.sample(services(request).pool, services(request).settings.cache_ttl)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE)
