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
from starlette.routing import BaseRoute, Mount, Route

from service.config import Settings
from service.http import changes, issues, openapi, refreshes, subscriptions, webhook
from service.http.accesslog import Access
from service.http.errors import HANDLERS
from service.http.middleware import BodyLimit, Guard
from service.jira import client as jira
from service.metrics import Metrics, get_metrics
from service.storage import migrate
from service.storage.pool import DatabaseUnavailableError, open_pool
from service.sync import feed, subscribers
from service.sync.freshness import FreshnessWatch
from service.sync.health import WebhookHealth
from service.sync.memo import Memo, listen
from service.sync.parts import Watch, jira_parts
from service.sync.poller import Poller
from service.sync.reads import Reader
from service.sync.refresh import Refresher
from service.sync.verified import Verified

# Where Jira delivers (the demo points its simulator here).
WEBHOOK_PATH = "/api/v1/webhooks/jira"
ADMIN = "an admin token (ADMIN_TOKENS)"


class State(TypedDict):
    settings: Settings
    pool: asyncpg.Pool
    metrics: Metrics
    memo: Memo | None
    jira: jira.JiraClient | None
    refresher: Refresher | None
    poller: Poller | None
    reader: Reader
    feed: feed.Feed
    verified: Verified
    health: WebhookHealth
    freshness: FreshnessWatch
    deliveries: subscribers.Deliveries | None


async def healthz(request: Request) -> Response:
    client: jira.JiraClient | None = request.state.jira
    jira_health = client.health if client else "unconfigured"
    webhooks = request.state.health.verdict.as_json()
    fresh = request.state.freshness.verdict.as_json()
    body = {"status": "ok", "jira": jira_health, "webhooks": webhooks, "freshness": fresh}
    return JSONResponse(body)


async def readyz(request: Request) -> Response:
    # Ready means the cache can serve: Jira being down does not make it unready.
    try:
        async with request.state.pool.acquire(timeout=2) as connection:
            pending = await migrate.pending_versions(connection)
    except DatabaseUnavailableError:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    except migrate.NoMigrationsError as exc:
        return JSONResponse({"status": "unavailable", "migrations": str(exc)}, status_code=503)
    if pending:
        body = {"status": "unavailable", "database": "ok", "pending_migrations": pending}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "database": "ok"})


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


def routes(settings: Settings) -> list[BaseRoute]:
    """Every route, each behind the tokens that open it (see the README's token table)."""
    api = settings.api_tokens | settings.admin_tokens
    cron = api | ({settings.cron_secret} if settings.cron_secret else set())
    metrics_token = frozenset({settings.metrics_token} if settings.metrics_token else set())
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi.get_openapi, methods=["GET"]),
        *guard([Route("/metrics", get_metrics, methods=["GET"])], metrics_token, "METRICS_TOKEN"),
        # Inside the Mount, so that a wrong method is a 405, not the Mount's 404; the
        # refresh routes first, so that .../jira/refresh is not read as a key.
        Mount(
            "/api/v1",
            routes=[
                *webhook.delivery_routes,
                # Closed whenever the API is: an API token does not open them.
                *guard(webhook.letter_routes, settings.admin_tokens, ADMIN, bool(api)),
                *guard(refreshes.cron_routes, cron, "CRON_SECRET, an API or an admin token"),
                *guard(
                    refreshes.routes + issues.routes + changes.routes + subscriptions.routes,
                    api,
                    "an API or an admin token",
                ),
            ],
        ),
    ]


def guard(
    routes: list[Route], tokens: frozenset[str], accepted: str, required: bool = False
) -> list[Route]:
    """The routes, each requiring one of `tokens` (none configured and not required: open)."""
    middleware = [Middleware(Guard, tokens=tokens, accepted=accepted, required=required)]
    return [
        Route(r.path, r.endpoint, methods=sorted(r.methods or ()), middleware=middleware)
        for r in routes
    ]


def create_app(settings: Settings) -> Starlette:
    if settings.database_url is None:
        raise ValueError("create_app needs a resolved database_url (see database.resolve_dsn)")
    dsn = settings.database_url
    metrics = Metrics()
    watch = Watch(
        Verified(settings.sync_recheck),
        WebhookHealth(bool(settings.webhook_secret), settings.webhook_grace),
        FreshnessWatch(settings),
    )
    metrics.watch_health(watch.health)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        pool = await open_pool(dsn, acquire_timeout=settings.db_acquire_timeout)
        try:
            async with pool.acquire() as connection:
                await migrate.apply_migrations(connection)
            async with (
                remembering(settings, dsn, metrics) as memo,
                feed.running(pool, dsn) as follower,
                jira_parts(settings, pool, metrics, memo, watch) as parts,
                subscribers.running(settings, follower, metrics) as deliveries,
            ):
                state = State(
                    settings=settings,
                    pool=pool,
                    metrics=metrics,
                    memo=memo,
                    jira=parts.client,
                    refresher=parts.refresher,
                    poller=parts.poller,
                    reader=parts.reader,
                    feed=follower,
                    verified=watch.verified,
                    health=watch.health,
                    freshness=watch.freshness,
                    deliveries=deliveries,
                )
                metrics.watch_feed(follower)
                yield dict(state)
        finally:
            await pool.close()

    return Starlette(
        routes=routes(settings),
        middleware=[
            Middleware(Access, metrics=metrics),
            Middleware(
                BodyLimit, limit=max(settings.max_body_bytes, settings.webhook_max_body_bytes)
            ),
        ],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
