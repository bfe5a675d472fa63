"""Webhook health: are webhooks delivering the changes that the sync and the poll find late?

Each issue row records who wrote its current version first (`changed_by`) and when
(`changed_at`). A version first found by a sync round or a poll more than WEBHOOK_GRACE
after Jira's `updated` is a webhook that should have come and did not. Derived from the
tables, so every replica tells the same story.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from service.jira import webhooks
from service.model import render_time
from service.storage import freshness, registration
from service.storage.pool import Executor

log = logging.getLogger(__name__)
State = Literal["ok", "missing", "partial", "silent", "unconfigured", "unknown"]
# No delivery for this long while changes are found late: the webhook looks gone altogether.
SILENCE_SECONDS = 900.0


@dataclass(frozen=True, slots=True)
class Verdict:
    state: State
    last_delivery: datetime | None = None
    changes: dict[str, int] = field(default_factory=dict)  # last hour, by who saw them first
    missed: int = 0
    missing_projects: tuple[str, ...] = ()
    uncovered_projects: tuple[str, ...] = ()  # tracked, but outside our webhook's filter

    @property
    def webhook_share(self) -> float | None:
        total = sum(self.changes.values())
        return round(self.changes.get("webhook", 0) / total, 4) if total else None

    def as_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "last_delivery_at": None
            if self.last_delivery is None
            else render_time(self.last_delivery),
            "webhook_share_last_hour": self.webhook_share,
            "changes_last_hour": self.changes,
            "missed_last_hour": self.missed,
            "missing_projects": list(self.missing_projects),
            "uncovered_projects": list(self.uncovered_projects),
        }


class WebhookHealth:
    """The latest verdict of this process; logs once when it turns bad and once when it heals."""

    def __init__(self, configured: bool, grace: float) -> None:
        self.grace = grace
        self.verdict = Verdict("unknown" if configured else "unconfigured")

    async def evaluate(self, executor: Executor) -> Verdict:
        if self.verdict.state == "unconfigured":
            return self.verdict
        self._turn(await self.judge_now(executor))
        return self.verdict

    async def judge_now(self, executor: Executor) -> Verdict:
        """The verdict from the tables now, without logging or keeping it."""
        if self.verdict.state == "unconfigured":
            return self.verdict
        row = await freshness.webhook_health(executor, self.grace)
        projects = tuple(row["projects"])
        counts = {name: int(n) for name, n in json.loads(row["counts"]).items() if name}
        uncovered = tuple(await _uncovered(executor))
        state = judge(row["last_delivery"], row["last_missed"], projects, row["now"])
        if uncovered and state != "silent":
            state = "partial"
        return Verdict(state, row["last_delivery"], counts, row["missed"], projects, uncovered)

    def _turn(self, verdict: Verdict) -> None:
        was, self.verdict = self.verdict.state, verdict
        if verdict.state == was:
            return
        if verdict.state == "partial":
            log.warning(
                "webhooks partial: our webhook's filter leaves out tracked projects %s",
                ", ".join(verdict.uncovered_projects),
                extra={"webhooks": verdict.as_json()},
            )
        elif verdict.state in ("missing", "silent"):
            log.warning(
                "webhooks %s: changes reach the cache only through sync or poll",
                verdict.state,
                extra={"webhooks": verdict.as_json()},
            )
        elif was in ("missing", "silent", "partial"):
            log.info("webhooks ok again", extra={"webhooks": verdict.as_json()})


def judge(
    last_delivery: datetime | None,
    last_missed: datetime | None,
    missing_projects: tuple[str, ...],
    now: datetime,
) -> State:
    """`silent` when nothing came for long while changes were found late; `missing` when a
    project's latest late-found change is newer than its latest webhook-delivered one."""
    quiet = last_delivery is None or (now - last_delivery).total_seconds() > SILENCE_SECONDS
    if quiet and last_missed is not None and (last_delivery is None or last_missed > last_delivery):
        return "silent"
    return "missing" if missing_projects else "ok"


async def _uncovered(executor: Executor) -> list[str]:
    """Tracked projects outside the filter of the webhook `webhook install` registered."""
    saved = await registration.load(executor)
    if saved is None or saved.all_projects:
        return []
    return webhooks.uncovered(saved.jql, await registration.tracked_projects(executor))
