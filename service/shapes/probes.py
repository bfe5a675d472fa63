"""The probes' and the webhook's answers: /healthz, /readyz, and what a delivery came to."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from service.shapes import Count, Shape, Time
from service.sync.freshness import Freshness as FreshnessVerdict
from service.sync.freshness import State as FreshnessState
from service.sync.health import State as WebhookState
from service.sync.health import Verdict
from service.sync.inbox import Outcome

Share = Annotated[float, msgspec.Meta(ge=0, le=1)]


class WebhookHealth(Shape, frozen=True):
    """Whether Jira's webhooks arrive: what the last hour's changes say (sync.health)."""

    state: WebhookState
    last_delivery_at: Time | None
    webhook_share_last_hour: Share | None
    changes_last_hour: dict[str, Count]
    missed_last_hour: Count
    missing_projects: list[str]
    uncovered_projects: list[str]


class ProjectFreshness(Shape, frozen=True):
    last_success_at: Time | None
    lag_seconds: float | None
    error: str | None
    unknown_to_jira: bool


class Freshness(Shape, frozen=True):
    """How fresh the cache can be said to be (sync.freshness): the worst state first."""

    state: FreshnessState
    problems: dict[FreshnessState, str]
    jira_clock_skew_seconds: float | None
    index_lag_seconds: float
    sync_overlap_seconds: float
    uncovered_projects: list[str]
    missed_webhooks_last_hour: Count
    stalled_projects: list[str]
    projects: dict[str, ProjectFreshness]


class Health(Shape, frozen=True):
    status: Literal["ok"]
    jira: Literal["ok", "degraded", "unconfigured"]
    webhooks: WebhookHealth
    freshness: Freshness


class Readiness(Shape, frozen=True, omit_defaults=True):
    status: Literal["ready", "unavailable"]
    database: Literal["ok", "unreachable"] | msgspec.UnsetType = msgspec.UNSET
    pending_migrations: list[str] | msgspec.UnsetType = msgspec.UNSET
    migrations: str | msgspec.UnsetType = msgspec.UNSET


class WebhookOutcome(Shape, frozen=True):
    outcome: Outcome


DOCUMENTED = (Health, Readiness, WebhookOutcome)


def shape_webhook_health(verdict: Verdict) -> WebhookHealth:
    # One rendering of each verdict (its as_json, also what the log lines carry), typed here.
    return msgspec.convert(verdict.as_json(), WebhookHealth)


def shape_freshness(verdict: FreshnessVerdict) -> Freshness:
    return msgspec.convert(verdict.as_json(), Freshness)
