"""The demo's live table: what the cache answers over HTTP, beside what Jira says now."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import aiohttp

from jira_simulator import Simulator

from .team import Team

CLEAR = "\x1b[H\x1b[2J"  # cursor home, erase the screen
# A change younger than this may still have its webhook on the way.
IN_FLIGHT = timedelta(seconds=1)
# The lines a frame has besides its rows: heading, curl commands, footer, the team's moves.
_FRAME_LINES = 24
# Every line fits a terminal this wide, so that nothing (the simulator's address) is cut.
WIDTH = 80


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    status: str
    assignee: str
    source: str
    age: float | None
    jira_says: str | None  # Jira's status now, when the cache has not caught up yet


@dataclass(frozen=True, slots=True)
class View:
    """Where things are, and what the demo was told, for the heading and footer."""

    url: str
    sim_url: str
    projects: tuple[str, ...]
    poll_interval: float
    ttl: float
    rows: int
    sync_interval: float = 0.0


@dataclass(frozen=True, slots=True)
class Healed:
    key: str
    source: str  # what brought the change: a poll, or a later webhook of the same issue
    after: float  # seconds the row was behind Jira


class Board:
    """Reads every project's links from the service and redraws the table."""

    def __init__(
        self, http: aiohttp.ClientSession, sim: Simulator, team: Team, view: View, out: TextIO
    ) -> None:
        self.http = http
        self.sim = sim
        self.team = team
        self.view = view
        self.out = out
        self.live = out.isatty()
        self.behind: dict[str, datetime] = {}  # since when each key is seen behind Jira
        self.healed: list[Healed] = []

    async def run(self, every: float) -> None:
        while True:
            self.draw(await self.read())
            await asyncio.sleep(every)

    async def read(self) -> list[Row]:
        issues: dict[str, dict[str, Any] | None] = {}
        for project in self.view.projects:
            async with self.http.get(f"/api/v1/projects/{project}/jira") as response:
                body = await response.json()
            issues |= {link["key"]: link["issue"] for link in body["links"]}
        # A dropped webhook is never in flight: its change is behind from the first frame.
        dropped = {move.key for move in self.team.moves if move.dropped}
        rows = [self.row(key, issue, key in dropped) for key, issue in issues.items()]
        self.notice(rows, datetime.now(UTC))
        # Rows behind Jira first, then the most recently written.
        return sorted(rows, key=lambda row: (row.jira_says is None, row.age or 0.0))

    def notice(self, rows: list[Row], now: datetime) -> None:
        """Remember which rows fell behind Jira, and when and how each caught up."""
        for row in rows:
            if row.jira_says is not None:
                self.behind.setdefault(row.key, now)
            elif (since := self.behind.pop(row.key, None)) is not None:
                seconds = (now - since).total_seconds() + IN_FLIGHT.total_seconds()
                self.healed.append(Healed(row.key, row.source, seconds))

    def row(self, key: str, issue: dict[str, Any] | None, dropped: bool = False) -> Row:
        if issue is None:
            return Row(key, "-", "-", "-", None, None)
        truth = self.sim.site.find(key)
        cached_at = datetime.fromisoformat(issue["jira_updated_at"])
        now = datetime.now(UTC)
        settled = now if dropped else now - IN_FLIGHT
        behind = truth is not None and cached_at < truth.updated < settled
        assignee = issue["assignee"]["display_name"] if issue["assignee"] else "-"
        status = issue["status"]["name"] if issue["status"] else "-"
        return Row(
            key,
            status,
            assignee,
            issue["source"],
            issue["age_seconds"],
            truth.status.name if behind and truth else None,
        )

    def draw(self, rows: list[Row]) -> None:
        lines = render(rows, self.view, self.team, self.sim, self.row_count(), self.healed)
        if self.live:
            # A wrapped line would push the frame past the screen's end: cut it instead.
            width = shutil.get_terminal_size().columns
            self.out.write(CLEAR + "\n".join(line[:width] for line in lines))
        else:
            self.out.write("\n".join(lines) + "\n\n")
        self.out.flush()

    def row_count(self) -> int:
        if self.view.rows or not self.live:
            return self.view.rows or 10
        return max(5, shutil.get_terminal_size().lines - _FRAME_LINES)


def render(
    rows: list[Row],
    view: View,
    team: Team,
    sim: Simulator,
    count: int,
    healed: list[Healed] | None = None,
) -> list[str]:
    port = view.url.rsplit(":", 1)[-1]
    project, key = view.projects[0], rows[0].key if rows else "ALPHA-1"
    lines = [
        "jira-status-cache demo (Ctrl-C stops)",
        f"  the cache:          {view.url}",
        f"  the Jira simulator: {view.sim_url} (its admin routes: /_sim/...)",
        "Try, in another terminal:",
        f"  curl -s localhost:{port}/api/v1/projects/{project}/jira",
        f"  curl -s localhost:{port}/api/v1/issues/{key}",
        f"  curl -s -X POST localhost:{port}/api/v1/projects/{project}/jira/refresh",
        f"  curl -s localhost:{port}/readyz",
        "",
        f"{'KEY':<10} {'STATUS':<12} {'ASSIGNEE':<16} {'SOURCE':<8} {'AGE':>7}",
    ]
    lines += [render_row(row) for row in rows[:count]]
    if len(rows) > count:
        lines.append(f"... and {len(rows) - count} more")
    lines += ["", *footer(rows, view, sim, healed or []), "", "The team, latest last:"]
    lines += [render_move(move.at, move.key, move.what, move.dropped) for move in team.moves]
    return lines


def render_row(row: Row) -> str:
    age = "-" if row.age is None else f"{row.age:.1f}s"
    line = f"{row.key:<10} {row.status[:12]:<12} {row.assignee[:16]:<16} {row.source:<8} {age:>7}"
    if row.jira_says is not None:
        line += f"  ! Jira: {row.jira_says[:12]}"
    return line


def footer(rows: list[Row], view: View, sim: Simulator, healed: list[Healed]) -> list[str]:
    sources = Counter(row.source for row in rows if row.source != "-")
    behind = sum(1 for row in rows if row.jira_says is not None)
    dropped = len(sim.hooks.dropped)
    written = ", ".join(f"{n} by {source}" for source, n in sources.most_common()) or "none yet"
    lines = [
        f"{len(rows)} linked; cached {written}",
        f"webhooks: {len(sim.hooks.events) - dropped} sent, {dropped} dropped",
        f"a poll every {view.poll_interval:g}s reads what is older than {view.ttl:g}s (the TTL)",
        *(
            [f"a sync every {view.sync_interval:g}s asks Jira what changed"]
            * bool(view.sync_interval)
        ),
        f"! {behind} behind Jira: their webhook was lost; a sync or a poll heals them",
    ]
    if healed:
        last = healed[-1]
        lines.append(
            f"healed: {len(healed)}, latest {last.key} by {last.source} after {last.after:.0f}s"
        )
    return lines


def render_move(at: datetime, key: str, what: str, dropped: bool) -> str:
    lost = "  (webhook dropped)" if dropped else ""
    return f"  {at:%H:%M:%S}  {key:<10} {what[:38]}{lost}"
