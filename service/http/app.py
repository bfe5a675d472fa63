"""create_app(settings): routes, middleware and the lifespan that owns every resource."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router

from service.config import Settings
from service.http import changes, clients, inbox, issues, openapi, refreshes, subscriptions
from service.http.accesslog import Access
from service.http.errors import HANDLERS
from service.http.metrics import get_metrics
from service.http.middleware import BodyLimit, Guard, ScopeGuard
from service.http.responses import ShapedResponse
from service.http.services import KEY, Services, services
from service.metrics import Metrics
from service.shapes.probes import Health, Readiness, shape_freshness, shape_webhook_health
from service.storage import migrate
from service.storage.pool import DatabaseUnavailableError, connect_session, open_pool
from service.sync import feed, hub, listener, schedule, subscribers
from service.sync.freshness import FreshnessWatch
from service.sync.health import WebhookHealth
from service.sync.inbox import Receiver
from service.sync.memo import Memo
from service.sync.verified import Verified
from service.sync.wiring import Watch, jira_parts

# Where Jira delivers (the demo points its simulator here).
WEBHOOK_PATH = "/api/v1/webhooks/jira"


async def healthz(request: Request) -> Response:
    client = services(request).jira
    jira_health = client.health if client else "unconfigured"
    found = services(request)
    webhooks = shape_webhook_health(found.health.verdict)
    fresh = shape_freshness(found.freshness.verdict)
    return ShapedResponse(Health(status="ok", jira=jira_health, webhooks=webhooks, freshness=fresh))


async def readyz(request: Request) -> Response:
    # Ready means the cache can serve: Jira being down does not make it unready.
    try:
        async with services(request).pool.acquire(timeout=2) as connection:
            pending = await migrate.pending_versions(connection)
    except DatabaseUnavailableError:
        return ShapedResponse(Readiness("unavailable", "unreachable"), status_code=503)
    except migrate.NoMigrationsError as exc:
        return ShapedResponse(Readiness("unavailable", migrations=str(exc)), status_code=503)
    if pending:
        body = Readiness("unavailable", "ok", pending_migrations=pending)
        return ShapedResponse(body, status_code=503)
    return ShapedResponse(Readiness("ready", "ok"))


@contextlib.asynccontextmanager
async def remembering(
    settings: Settings, heard: listener.Listener, metrics: Metrics
) -> AsyncIterator[Memo | None]:
    """The in-process memo, following the change listener; MEMO_SIZE=0 goes without."""
    if settings.memo_size == 0:
        yield None
        return
    memo = Memo(settings.memo_size, settings.memo_ttl)
    metrics.watch_memo(memo)
    heard.subscribe(memo.subscriber())
    yield memo


async def migrate_over(session_dsn: str) -> None:
    """Apply pending migrations on a session of their own: their advisory lock is held by a
    session, which a transaction pooler would hand to other clients between statements."""
    connection = await connect_session(session_dsn)
    try:
        await migrate.apply_migrations(connection)
    finally:
        await connection.close()


def receiver(settings: Settings, pool: asyncpg.Pool, memo: Memo | None) -> Receiver | None:
    """Jira's deliveries in; none without JIRA_WEBHOOK_SECRET (the route answers 403)."""
    if not settings.webhook_secret:
        return None
    return Receiver(pool, memo, settings.webhook_secret, settings.cache_ttl)


def routes(settings: Settings) -> list[BaseRoute]:
    """Every route, each behind the scope or tokens that open it (the README's token table)."""
    cron = frozenset({settings.cron_secret} if settings.cron_secret else set())
    metrics_token = frozenset({settings.metrics_token} if settings.metrics_token else set())
    # Starlette tries routes in order until one matches path and method: the hot ones (GET
    # issues, Jira's webhook) come first. The refresh routes come before the links, so that
    # a wrong method on .../jira/refresh answers 405 with the refresh's Allow, the first
    # route whose path matched.
    return [
        # Inside the Mount, so that a wrong method is a 405, not the Mount's 404.
        Mount(
            "/api/v1",
            app=unslashed(
                [
                    *inbox.delivery_routes,
                    *scoped(issues.read_routes, "read"),
                    *scoped(refreshes.routes, "refresh"),
                    *scoped(issues.link_routes + changes.routes, "read"),
                    *scoped(subscriptions.routes, "subscribe"),
                    *scoped(inbox.letter_routes, "admin"),
                    *scoped(refreshes.cron_routes, "refresh", cron, "CRON_SECRET or "),
                ]
            ),
        ),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi.get_openapi, methods=["GET"]),
        *guard([Route("/metrics", get_metrics, methods=["GET"])], metrics_token, "METRICS_TOKEN"),
    ]


def unslashed(routes: list[BaseRoute]) -> Router:
    """A router that answers 404 for a path with a stray slash: Starlette's redirect would
    build its Location from the Host header the client sent."""
    return Router(routes=routes, redirect_slashes=False)


def scoped(
    routes: list[Route], scope: str, tokens: frozenset[str] = frozenset(), also: str = ""
) -> list[Route]:
    """The routes, each opened by a client with `scope` (or admin), or by one of `tokens`."""
    accepted = f"{also}a client token with the scope {scope} (or admin)"
    return _wrapped(routes, Middleware(ScopeGuard, scope=scope, accepted=accepted, tokens=tokens))


def guard(routes: list[Route], tokens: frozenset[str], accepted: str) -> list[Route]:
    """The routes, each requiring one of `tokens` (none configured: open)."""
    return _wrapped(routes, Middleware(Guard, tokens=tokens, accepted=accepted))


def _wrapped(routes: list[Route], middleware: Middleware) -> list[Route]:
    return [
        Route(r.path, r.endpoint, methods=sorted(r.methods or ()), middleware=[middleware])
        for r in routes
    ]


def create_app(settings: Settings, started: Callable[[], None] = lambda: None) -> Starlette:
    """The app; `started` runs once its lifespan has built every service, before it serves."""
    if settings.database_url is None:
        raise ValueError("create_app needs a resolved database_url (see embedded.resolve_dsn)")
    dsn, session_dsn = settings.database_url, settings.database_listen_url or settings.database_url
    metrics = Metrics()
    watch = Watch(
        Verified(settings.sync_recheck),
        WebhookHealth(bool(settings.webhook_secret), settings.webhook_grace),
        FreshnessWatch(settings),
    )
    metrics.watch_health(watch.health)
    metrics.watch_freshness(watch.freshness)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        pooled = settings.database_pooler == "transaction"
        pool = await open_pool(
            dsn,
            max_size=settings.database_pool_size,
            acquire_timeout=settings.db_acquire_timeout,
            pooled=pooled,
        )
        heard = listener.Listener(session_dsn)
        try:
            await migrate_over(session_dsn)
            await pool.execute("SELECT 1")  # DATABASE_URL answers too, or start fails, saying why
            async with (
                clients.loaded(settings, pool) as callers,
                remembering(settings, heard, metrics) as memo,
                feed.running(pool, heard) as follower,
                listener.running(heard),
                hub.running(
                    follower,
                    functools.partial(changes.render_frame, ttl=settings.cache_ttl),
                    settings.stream_limit,
                    settings.stream_buffer,
                ) as streams,
                jira_parts(settings, pool, metrics, memo) as parts,
                schedule.running(parts, watch, settings, metrics, memo),
                subscribers.running(settings, follower, metrics) as deliveries,
            ):
                found = Services(
                    settings=settings,
                    pool=pool,
                    metrics=metrics,
                    memo=memo,
                    jira=parts.client,
                    refresher=parts.refresher,
                    poller=parts.poller,
                    reader=parts.reader,
                    feed=follower,
                    hub=streams,
                    verified=watch.verified,
                    health=watch.health,
                    freshness=watch.freshness,
                    deliveries=deliveries,
                    clients=callers,
                    receiver=receiver(settings, pool, memo),
                )
                metrics.watch_feed(follower)
                metrics.watch_hub(streams)
                started()
                yield {KEY: found}
        finally:
            await pool.close()

    app = Starlette(
        routes=routes(settings),
        middleware=[
            Middleware(Access, metrics=metrics),
            Middleware(
                BodyLimit,
                limit=max(settings.max_body_bytes, settings.webhook_max_body_bytes),
                timeout=settings.body_timeout,
            ),
        ],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # as unslashed(): never a Location from Host
    return app
