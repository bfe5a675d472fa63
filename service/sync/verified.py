"""Per process: when each Jira project was last verified by a sync, for rendering freshness."""

from __future__ import annotations

from datetime import datetime, timedelta

from service.model import CachedIssue, project_of
from service.storage import watermarks
from service.storage.pool import Executor


class Verified:
    """Project -> (verified_at, covered_since), reloaded from PostgreSQL every few seconds.

    Reads are served from the memo without PostgreSQL, so freshness is applied at render
    time from this small map rather than stored on each issue row.
    """

    def __init__(self, recheck: float) -> None:
        self.recheck = timedelta(seconds=recheck)
        self._marks: dict[str, tuple[datetime, datetime]] = {}

    async def load(self, executor: Executor) -> None:
        self._marks = {
            mark.project: (mark.verified_at, mark.covered_since)
            for mark in await watermarks.watermarks(executor)
            if mark.verified_at is not None and mark.covered_since is not None
        }

    def at(self, cached: CachedIssue) -> datetime | None:
        """When the issue was last known current by its project's sync, if it was."""
        project = project_of(cached.issue.key) or ""
        mark = self._marks.get(project)
        if mark is None or cached.state != "ok":
            return None
        verified, covered_since = mark
        # Read before coverage began, or so long ago that a deletion might have been missed.
        if cached.fetched_at < covered_since or cached.fetched_at < verified - self.recheck:
            return None
        return verified
