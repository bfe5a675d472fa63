"""The probes' and the webhook's answers: /healthz, /readyz, and what a delivery came to."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from service.shapes import Count, Shape, Time
from service.sync.health import State as WebhookState
from service.sync.health import Verdict
from service.sync.webhook import Outcome

Share = Annotated[float, msgspec.Meta(ge=0, le=1)]


class WebhookHealth(Shape, frozen=True):
    """Whether Jira's webhooks arrive: what the last hour's changes say (sync.health)."""

    state: WebhookState
    last_delivery_at: Time | None
    webhook_share_last_hour: Share | None
    changes_last_hour: dict[str, Count]
    missed_last_hour: Count
    missing_projects: list[str]


class Health(Shape, frozen=True):
    status: Literal["ok"]
    jira: Literal["ok", "degraded", "unconfigured"]
    webhooks: WebhookHealth


class Readiness(Shape, frozen=True, omit_defaults=True):
    status: Literal["ready", "unavailable"]
    database: Literal["ok", "unreachable"] | msgspec.UnsetType = msgspec.UNSET
    pending_migrations: list[str] | msgspec.UnsetType = msgspec.UNSET
    migrations: str | msgspec.UnsetType = msgspec.UNSET


class WebhookOutcome(Shape, frozen=True):
    outcome: Outcome


DOCUMENTED = (Health, Readiness, WebhookOutcome)


def shape_webhook_health(verdict: Verdict) -> WebhookHealth:
    last = verdict.last_delivery
    return WebhookHealth(
        state=verdict.state,
        last_delivery_at=None if last is None else last.isoformat(),
        webhook_share_last_hour=verdict.webhook_share,
        changes_last_hour=verdict.changes,
        missed_last_hour=verdict.missed,
        missing_projects=list(verdict.missing_projects),
    )
