"""Jira's search index lag, estimated from what this process's sync searches missed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from service.model import Issue, project_of
from service.storage import watermarks

MEMORY = 3600.0  # seconds of returned versions kept (pruned past 100,000 entries)


class LagWatch:
    """Estimates Jira's search index lag from what this process's searches missed.

    A webhook tells us an issue changed at `updated`. If a search of its project that began
    after that (and reached back past it) did not return that version, and a later one does,
    the index lagged at least the time between the change and the search that missed it.
    """

    def __init__(self) -> None:
        self._returned: dict[int, datetime] = {}  # issue id -> version our searches returned
        self._last: dict[str, tuple[datetime, datetime]] = {}  # project -> (began, since)

    def observe(self, page: Sequence[Issue], known: dict[int, watermarks.Known]) -> float | None:
        """The largest lag this page proves, if any; remembers what it returned."""
        worst: float | None = None
        for issue in page:
            seen, cached = self._returned.get(issue.id), known.get(issue.id)
            self._returned[issue.id] = issue.updated
            last = self._last.get(project_of(issue.key) or "")
            if cached is None or cached.changed_by != "webhook" or last is None:
                continue
            began, since = last
            if cached.updated != issue.updated or seen == issue.updated:
                continue  # an older version, or one a search already returned
            if since <= issue.updated < began:
                lag = (began - issue.updated).total_seconds()
                worst = lag if worst is None else max(worst, lag)
        return worst

    def searched(self, projects: list[str], began: datetime, since: datetime) -> None:
        """Remember that a search of `projects` began at `began` (Jira's clock), from `since`."""
        for project in projects:
            self._last[project] = (began, since)
        horizon = began - timedelta(seconds=MEMORY)
        if len(self._returned) > 100_000:
            self._returned = {i: u for i, u in self._returned.items() if u >= horizon}
