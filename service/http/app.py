"""create_app(settings): routes, middleware and the lifespan that owns every resource."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from service.config import Settings
from service.http import issues as api
from service.http import openapi, webhook
from service.http import refreshes as triggers
from service.http.accesslog import Access
from service.http.errors import DATABASE_DOWN, HANDLERS
from service.http.middleware import BodyLimit, TokenGuard
from service.jira import client as jira
from service.metrics import Metrics, get_metrics
from service.storage import migrate
from service.storage.pool import open_pool
from service.sync.changes import Syncer
from service.sync.health import WebhookHealth
from service.sync.memo import Memo, listen
from service.sync.poller import Poller
from service.sync.refresh import Refresher
from service.sync.schedule import add_sync_jobs, start_scheduler
from service.sync.verified import Verified

# Jira cannot send our bearer tokens: the webhook proves itself with its own secret,
# and the cron endpoint also takes CRON_SECRET.
WEBHOOK_PATH = "/api/v1/webhooks/jira"
CRON_PATH = "/api/v1/cron/jira-refresh"


class State(TypedDict):
    settings: Settings
    pool: asyncpg.Pool
    metrics: Metrics
    memo: Memo | None
    jira: jira.JiraClient | None
    refresher: Refresher | None
    poller: Poller | None
    verified: Verified
    health: WebhookHealth


async def healthz(request: Request) -> Response:
    client: jira.JiraClient | None = request.state.jira
    jira_health = client.health if client else "unconfigured"
    webhooks = request.state.health.verdict.as_json()
    return JSONResponse({"status": "ok", "jira": jira_health, "webhooks": webhooks})


async def readyz(request: Request) -> Response:
    # Ready means the cache can serve: Jira being down does not make it unready.
    try:
        async with request.state.pool.acquire(timeout=2) as connection:
            pending = await migrate.pending_versions(connection)
    except DATABASE_DOWN:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    if pending:
        body = {"status": "unavailable", "database": "ok", "pending_migrations": pending}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "database": "ok"})


@contextlib.asynccontextmanager
async def jira_parts(
    settings: Settings,
    pool: asyncpg.Pool,
    metrics: Metrics,
    memo: Memo | None,
    watch: tuple[Verified, WebhookHealth],
) -> AsyncIterator[tuple[jira.JiraClient | None, Refresher | None, Poller | None]]:
    """The Jira session, client, refresher, poller and scheduler, when Jira is configured."""
    if settings.jira_base_url is None:
        yield None, None, None
        return
    async with jira.open_session(settings) as session:
        client = jira.JiraClient(session, settings)
        metrics.watch_jira(client)
        refresher = Refresher(pool, client, settings.cache_ttl, metrics, memo)
        poller = Poller(pool, refresher, settings)
        scheduler = None
        if settings.poll_interval or settings.sync_interval:
            scheduler = start_scheduler(poller, pool, settings)
            add_sync_jobs(
                scheduler, Syncer(pool, client, settings, metrics, memo), *watch, settings
            )
        try:
            yield client, refresher, poller
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=False)
            await poller.stop()


@contextlib.asynccontextmanager
async def remembering(settings: Settings, dsn: str, metrics: Metrics) -> AsyncIterator[Memo | None]:
    """The in-process memo and its change listener; MEMO_SIZE=0 goes without."""
    if settings.memo_size == 0:
        yield None
        return
    memo, stop = Memo(settings.memo_size, settings.memo_ttl), asyncio.Event()
    metrics.watch_memo(memo)
    listener = asyncio.create_task(listen(memo, dsn, stop))
    try:
        yield memo
    finally:
        stop.set()
        # Connecting to a PostgreSQL that does not answer could take the connect timeout.
        done, _ = await asyncio.wait([listener], timeout=1.0)
        if not done:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)


def create_app(settings: Settings) -> Starlette:
    if settings.database_url is None:
        raise ValueError("create_app needs a resolved database_url (see database.resolve_dsn)")
    dsn = settings.database_url
    metrics = Metrics()
    watch = (
        Verified(settings.sync_recheck),
        WebhookHealth(bool(settings.webhook_secret), settings.webhook_grace),
    )
    metrics.watch_health(watch[1])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        pool = await open_pool(dsn)
        try:
            async with pool.acquire() as connection:
                await migrate.apply_migrations(connection)
            async with (
                remembering(settings, dsn, metrics) as memo,
                jira_parts(settings, pool, metrics, memo, watch) as (client, refresher, poller),
            ):
                state = State(
                    settings=settings,
                    pool=pool,
                    metrics=metrics,
                    memo=memo,
                    jira=client,
                    refresher=refresher,
                    poller=poller,
                    verified=watch[0],
                    health=watch[1],
                )
                yield dict(state)
        finally:
            await pool.close()

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/openapi.json", openapi.get_openapi, methods=["GET"]),
            Route("/metrics", get_metrics, methods=["GET"]),
            # Inside the Mount, so that a wrong method is a 405, not the Mount's 404; the
            # refresh routes first, so that .../jira/refresh is not read as a key.
            Mount("/api/v1", routes=webhook.routes + triggers.routes + api.routes),
        ],
        middleware=[
            Middleware(Access, metrics=metrics),
            Middleware(
                TokenGuard,
                tokens=settings.api_tokens,
                open_paths=frozenset({WEBHOOK_PATH, CRON_PATH}),
            ),
            Middleware(
                BodyLimit, limit=max(settings.max_body_bytes, settings.webhook_max_body_bytes)
            ),
        ],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
