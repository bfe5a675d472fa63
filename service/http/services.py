"""The services every handler uses, built once by the lifespan, and the one typed way to them."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from starlette.requests import HTTPConnection

from service.config import Settings
from service.http.clients import Clients
from service.jira.client import JiraClient
from service.metrics import Metrics
from service.sync.feed import Feed
from service.sync.freshness import FreshnessWatch
from service.sync.health import WebhookHealth
from service.sync.hub import Hub
from service.sync.inbox import Receiver
from service.sync.memo import Memo
from service.sync.poller import Poller
from service.sync.reads import Reader
from service.sync.refresh import Refresher
from service.sync.subscribers import Deliveries
from service.sync.verified import Verified

KEY = "services"  # the lifespan state's one entry


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    pool: asyncpg.Pool
    metrics: Metrics
    memo: Memo | None
    jira: JiraClient | None
    refresher: Refresher | None
    poller: Poller | None
    reader: Reader
    feed: Feed
    hub: Hub
    verified: Verified
    health: WebhookHealth
    freshness: FreshnessWatch
    deliveries: Deliveries | None
    clients: Clients
    receiver: Receiver | None


def services(connection: HTTPConnection) -> Services:
    """The lifespan's services, typed (the request's state is untyped)."""
    found: Services = connection.state.services
    return found
