"""How fresh the cache can be said to be, in one verdict: /healthz's `freshness`, `check`'s
words, and a log line each time it changes.

It puts together what the sync measured and stored (each project's watermark, failure and
overlap; Jira's clock skew and index lag) and the webhook health (uncovered projects, missed
webhooks). Derived from PostgreSQL, so every replica tells the same story.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from service.config import Settings
from service.model import render_time
from service.storage import watermarks
from service.storage.pool import Executor
from service.sync.health import Verdict

log = logging.getLogger(__name__)
State = Literal[
    "ok", "stalled", "failing", "partial", "lagging", "skewed", "unknown_projects", "off", "unknown"
]
# Worst first: the verdict's state is the first that applies.
ORDER: tuple[State, ...] = (
    "stalled",
    "failing",
    "partial",
    "lagging",
    "skewed",
    "unknown_projects",
)
STALLED_AFTER = 3  # intervals without a successful round
LAG_NEAR = 0.5  # of JIRA_SYNC_OVERLAP: an index lag past it leaves the overlap little room


@dataclass(frozen=True, slots=True)
class Project:
    project: str
    verified_at: datetime | None
    lag_seconds: float | None  # now minus verified_at
    error: str | None
    unknown_to_jira: bool
    stalled: bool


@dataclass(frozen=True, slots=True)
class Freshness:
    state: State
    problems: dict[State, str] = field(default_factory=dict)  # each condition, in words
    projects: tuple[Project, ...] = ()
    skew: float | None = None
    index_lag: float = 0.0
    overlap: float = 0.0
    uncovered: tuple[str, ...] = ()
    missed: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "problems": {state: words for state, words in self.problems.items()},
            "jira_clock_skew_seconds": None if self.skew is None else round(self.skew, 2),
            "index_lag_seconds": round(self.index_lag, 2),
            "sync_overlap_seconds": round(self.overlap, 2),
            "uncovered_projects": list(self.uncovered),
            "missed_webhooks_last_hour": self.missed,
            "stalled_projects": [p.project for p in self.projects if p.stalled],
            "projects": {
                p.project: {
                    "last_success_at": None
                    if p.verified_at is None
                    else render_time(p.verified_at),
                    "lag_seconds": None if p.lag_seconds is None else round(p.lag_seconds, 1),
                    "error": p.error,
                    "unknown_to_jira": p.unknown_to_jira,
                }
                for p in self.projects
            },
        }

    def lines(self) -> list[str]:
        """The verdict in words, one line per condition (`check` prints them)."""
        if self.state == "off":
            return ["sync off (JIRA_SYNC_INTERVAL=0): the TTL poll alone heals lost webhooks"]
        if not self.problems:
            skew = "unmeasured" if self.skew is None else f"{self.skew:+.1f}s"
            return [
                f"fresh: {len(self.projects)} project(s) synced; Jira clock {skew}, index lag "
                f"{self.index_lag:.1f}s within the {self.overlap:.0f}s overlap"
            ]
        return [f"{state}: {words}" for state, words in self.problems.items()]


def judge(
    settings: Settings,
    marks: list[watermarks.Watermark],
    clock: watermarks.JiraClock,
    webhooks: Verdict | None,
    now: datetime,
) -> Freshness:
    """The verdict from the stored sync state and the webhook health."""
    interval, overlap = settings.sync_interval, settings.sync_overlap
    if interval <= 0:
        return Freshness("off")
    projects = tuple(_project(mark, interval, now) for mark in marks)
    problems: dict[State, str] = {}
    if stalled := [p.project for p in projects if p.stalled]:
        problems["stalled"] = (
            f"no successful sync round for {STALLED_AFTER} intervals "
            f"({STALLED_AFTER * interval:g}s) in {', '.join(stalled)}"
        )
    if failing := [
        f"{p.project} ({p.error})" for p in projects if p.error and not p.unknown_to_jira
    ]:
        problems["failing"] = "sync fails for " + "; ".join(failing)
    uncovered = webhooks.uncovered_projects if webhooks else ()
    if uncovered:
        problems["partial"] = (
            f"tracked project(s) {', '.join(uncovered)} are outside our webhook's filter: "
            "their changes wait for the sync"
        )
    if clock.index_lag > LAG_NEAR * overlap:
        problems["lagging"] = (
            f"Jira's search index lagged {clock.index_lag:.1f}s, near or past "
            f"JIRA_SYNC_OVERLAP={overlap:g}s"
        )
    skew = clock.skew if clock.skew_measured_at is not None else None
    if skew is not None and abs(skew) > overlap:
        problems["skewed"] = (
            f"Jira's clock is {abs(skew):.1f}s {'ahead of' if skew > 0 else 'behind'} ours, "
            f"more than JIRA_SYNC_OVERLAP={overlap:g}s (corrected by the sync; fix its NTP)"
        )
    if unknown := [p.project for p in projects if p.unknown_to_jira]:
        problems["unknown_projects"] = f"Jira does not know project(s) {', '.join(unknown)}"
    state: State = next((s for s in ORDER if s in problems), "ok")
    used = max((p.overlap for p in marks if p.overlap is not None), default=overlap)
    missed = webhooks.missed if webhooks else 0
    ordered = {s: problems[s] for s in ORDER if s in problems}
    return Freshness(state, ordered, projects, skew, clock.index_lag, used, uncovered, missed)


def _project(mark: watermarks.Watermark, interval: float, now: datetime) -> Project:
    lag = None if mark.verified_at is None else (now - mark.verified_at).total_seconds()
    # The watermark sits `overlap` behind its round's start.
    since_round = None if lag is None else lag - (mark.overlap or 0.0)
    stalled = (
        not mark.unknown_to_jira
        and since_round is not None
        and since_round > STALLED_AFTER * interval
    )
    return Project(mark.project, mark.verified_at, lag, mark.error, mark.unknown_to_jira, stalled)


class FreshnessWatch:
    """This process's latest verdict; one log line each time its state changes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.verdict = Freshness("off" if settings.sync_interval <= 0 else "unknown")

    async def evaluate(self, executor: Executor, webhooks: Verdict | None) -> Freshness:
        marks = await watermarks.watermarks(executor)
        clock = await watermarks.jira_clock(executor)
        now = await watermarks.now(executor)
        self._turn(judge(self.settings, marks, clock, webhooks, now))
        return self.verdict

    def _turn(self, verdict: Freshness) -> None:
        was, self.verdict = self.verdict.state, verdict
        if verdict.state == was:
            return
        if verdict.state in ("ok", "off"):
            if was != "unknown":
                log.info("freshness %s again (was %s)", verdict.state, was)
        else:
            log.warning(
                "freshness %s: %s",
                verdict.state,
                verdict.problems.get(verdict.state, ""),
                extra={"freshness": verdict.as_json()},
            )
