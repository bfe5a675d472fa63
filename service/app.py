"""create_app(settings): routes, middleware and the lifespan that owns every resource."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from service import api, migrate, webhook
from service.config import Settings
from service.database import open_pool
from service.errors import DATABASE_DOWN, HANDLERS
from service.guard import BodyLimit, TokenGuard

# Jira cannot send our bearer tokens; the webhook proves itself with its own secret.
WEBHOOK_PATH = "/api/v1/webhooks/jira"


class State(TypedDict):
    settings: Settings
    pool: asyncpg.Pool


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        async with request.state.pool.acquire(timeout=2) as connection:
            pending = await migrate.pending_versions(connection)
    except DATABASE_DOWN:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    if pending:
        body = {"status": "unavailable", "database": "ok", "pending_migrations": pending}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "database": "ok"})


def create_app(settings: Settings) -> Starlette:
    if settings.database_url is None:
        raise ValueError("create_app needs a resolved database_url (see database.resolve_dsn)")
    dsn = settings.database_url

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        pool = await open_pool(dsn)
        try:
            async with pool.acquire() as connection:
                await migrate.apply_migrations(connection)
            yield dict(State(settings=settings, pool=pool))
        finally:
            await pool.close()

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route(WEBHOOK_PATH, webhook.receive, methods=["POST"]),
            Route("/api/v1/webhooks/dead-letters", webhook.get_dead_letters, methods=["GET"]),
            Mount("/api/v1", routes=api.routes),
        ],
        middleware=[
            Middleware(
                TokenGuard, tokens=settings.api_tokens, open_paths=frozenset({WEBHOOK_PATH})
            ),
            Middleware(
                BodyLimit, limit=max(settings.max_body_bytes, settings.webhook_max_body_bytes)
            ),
        ],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
