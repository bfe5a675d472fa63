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

from service.model import render_time
from service.storage.pool import Executor

log = logging.getLogger(__name__)
State = Literal["ok", "missing", "silent", "unconfigured", "unknown"]
# No delivery for this long while changes are found late: the webhook looks gone altogether.
SILENCE_SECONDS = 900.0

# A sequential scan of issues changed in the last hour; run every half minute, not per request.
_HEALTH = """
WITH recent AS (
    SELECT split_part(key, '-', 1) AS project, changed_by, jira_updated_at,
           changed_by IN ('sync', 'poll')
           AND changed_at > jira_updated_at + make_interval(secs => $1) AS missed
      FROM issues WHERE changed_at > now() - interval '1 hour'
),
projects AS (
    SELECT project FROM recent GROUP BY project
    HAVING max(jira_updated_at) FILTER (WHERE missed) > coalesce(
        max(jira_updated_at) FILTER (WHERE changed_by = 'webhook'), '-infinity')
)
SELECT (SELECT max(received_at) FROM webhook_deliveries) AS last_delivery,
       (SELECT max(jira_updated_at) FROM recent WHERE missed) AS last_missed,
       (SELECT count(*) FROM recent WHERE missed) AS missed,
       (SELECT coalesce(array_agg(project ORDER BY project), '{}') FROM projects) AS projects,
       (SELECT coalesce(jsonb_object_agg(changed_by, n), '{}') FROM
         (SELECT changed_by, count(*) AS n FROM recent GROUP BY changed_by) AS c)::text AS counts,
       now() AS now
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    state: State
    last_delivery: datetime | None = None
    changes: dict[str, int] = field(default_factory=dict)  # last hour, by who saw them first
    missed: int = 0
    missing_projects: tuple[str, ...] = ()

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
        }


class WebhookHealth:
    """The latest verdict of this process; logs once when it turns bad and once when it heals."""

    def __init__(self, configured: bool, grace: float) -> None:
        self.grace = grace
        self.verdict = Verdict("unknown" if configured else "unconfigured")

    async def evaluate(self, executor: Executor) -> Verdict:
        if self.verdict.state == "unconfigured":
            return self.verdict
        (row,) = await executor.fetch(_HEALTH, self.grace)  # aggregates: always one row
        projects = tuple(row["projects"])
        counts = {name: int(n) for name, n in json.loads(row["counts"]).items() if name}
        state = judge(row["last_delivery"], row["last_missed"], projects, row["now"])
        self._turn(Verdict(state, row["last_delivery"], counts, row["missed"], projects))
        return self.verdict

    def _turn(self, verdict: Verdict) -> None:
        was, self.verdict = self.verdict.state, verdict
        if verdict.state == was:
            return
        if verdict.state in ("missing", "silent"):
            log.warning(
                "webhooks %s: changes reach the cache only through sync or poll",
                verdict.state,
                extra={"webhooks": verdict.as_json()},
            )
        elif was in ("missing", "silent"):
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
