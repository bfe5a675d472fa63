"""Builders of normalized issues for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.model import Assignee, Issue, Status

BASE_TIME = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)
IN_PROGRESS = Status("3", "In Progress", "indeterminate")
DONE = Status("10001", "Done", "done")


def make_issue(
    id: int = 10007,
    key: str = "PRJ-7",
    status: Status | None = IN_PROGRESS,
    summary: str = "Login fails",
    minutes: float = 0,
    assignee: Assignee | None = None,
) -> Issue:
    """An issue whose Jira `updated` is BASE_TIME plus `minutes`."""
    return Issue(
        id=id,
        key=key,
        status=status,
        summary=summary,
        assignee=assignee,
        priority="High",
        updated=BASE_TIME + timedelta(minutes=minutes),
    )
