"""Jira's search for issues of some projects changed since a time, page by page.

How the time is expressed, and why:
- JQL dates without a zone (`updated >= "2026-11-29 10:00"`) are read in the time zone of
  the Jira user running the search, which is neither ours nor the site's, and have minute
  precision: a wrong zone silently shifts the window by hours. Relative dates
  (`updated >= -7m`) count back from Jira's own "now", in no zone at all. So we send the
  window as whole minutes back, rounded up: the window only ever grows.
- Jira's clock is not ours. Counting back from Jira's now, a Jira clock ahead of ours by d
  seconds starts the window d seconds late; the sync round's overlap covers that.
- Jira's search index lags writes by seconds (Cloud says so), so a round cannot vouch for
  the last moments before it started. The round therefore claims to have verified only up
  to its start minus the overlap, and the next round searches from there again. Re-reading
  an issue is harmless: every write goes forward by Jira's `updated` only.
- Whole minutes widen the window: a round every few seconds would read a minute of changes
  each time. Newest first (`ORDER BY updated DESC`), the search stops after the first page
  that reaches back past the window's true start. Newest first also keeps paging safe: an
  issue changed while we page moves to the front, already read, and pushes the rest back
  (read twice); oldest first, it would move to the end and pull the rest forward, so that
  the first issue of the next page would be skipped, for good once past the overlap.
- A project that does not exist, or that our user may not browse, fails the whole JQL with
  400, naming it in `errorMessages`; it is dropped and the search runs again without it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.jira.client import FIELDS, JiraClient
from service.jira.errors import SearchRefusedError, unknown_projects_in
from service.jira.paging import search_pages
from service.model import InvalidIssueError, Issue, normalize_issue

# Projects per query, so that no JQL grows unbounded; issues per page (Jira's usual cap
# when fields are asked for).
PROJECTS_PER_QUERY = 50
PAGE_SIZE = 100
log = logging.getLogger(__name__)


@dataclass(slots=True)
class ChangeSearch:
    """A search of `projects` for issues updated in the last `seconds`; pages as they come."""

    client: JiraClient
    projects: list[str]
    seconds: float
    since: datetime | None = None  # the window's true start: later pages are not read
    dropped: dict[str, str] = field(default_factory=dict)
    pages: int = 0
    invalid: int = 0

    def jql(self) -> str:
        minutes = max(1, math.ceil(self.seconds / 60))
        names = ", ".join(f'"{project}"' for project in self.projects)
        return f"project in ({names}) AND updated >= -{minutes}m ORDER BY updated DESC"

    async def issues(self) -> AsyncIterator[list[Issue]]:
        """Every page's issues, following every page; a dropped project restarts the search."""
        while self.projects:
            query = {"jql": self.jql(), "fields": list(FIELDS), "maxResults": PAGE_SIZE}
            try:
                async for raw in search_pages(self.client, query):
                    self.pages += 1
                    page = self._read(raw)
                    yield page
                    if self.since is not None and any(i.updated < self.since for i in page):
                        return
                return
            except SearchRefusedError as refused:
                self._drop_named(refused)

    def _read(self, raw: list[Any]) -> list[Issue]:
        found = []
        for item in raw:
            try:
                found.append(normalize_issue(item))
            except InvalidIssueError:
                self.invalid += 1
        return found

    def _drop_named(self, refused: SearchRefusedError) -> None:
        named = {name for text in refused.texts for name in unknown_projects_in(text)}
        gone = named & set(self.projects)
        if not gone:
            raise refused.plain() from None
        for project in sorted(gone):
            self.dropped[project] = next(t for t in refused.texts if f"'{project}'" in t.upper())
        self.projects = [project for project in self.projects if project not in gone]
