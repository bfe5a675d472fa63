"""The answers' shapes, each declared once: what HTTP serves, the CLI prints, OpenAPI documents."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

import msgspec

from service.model import (
    KEY_PATTERN,
    PROJECT_ID_PATTERN,
    CachedIssue,
    Category,
    Source,
    State,
    render_time,
)
from service.storage import webhooks
from service.sync import refresh

# A time as render_time writes it (UTC, milliseconds, `Z`): a string, since msgspec would
# write a datetime with microseconds.
Time = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]
Count = Annotated[int, msgspec.Meta(ge=0)]
Key = Annotated[str, msgspec.Meta(pattern=KEY_PATTERN.pattern)]


# Each shape repeats frozen=True: msgspec inherits it, but mypy reads a subclass without it
# as a mutable dataclass under a frozen one.
class Shape(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A closed object whose fields are all required (additionalProperties false)."""


class Status(Shape, frozen=True):
    id: str
    name: str
    category: Category


class Assignee(Shape, frozen=True):
    account_id: str
    display_name: str


class Issue(Shape, frozen=True):
    """An issue as GET answers it: Jira's fields, and how fresh the cache's copy is."""

    key: Key
    id: Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]
    status: Status | None
    summary: str | None
    assignee: Assignee | None
    priority: str | None
    jira_updated_at: Time
    fetched_at: Time
    age_seconds: Annotated[
        float,
        msgspec.Meta(
            ge=0,
            description="seconds since the issue was last verified current: the later of its"
            " own read (fetched_at) and its Jira project's last successful sync",
        ),
    ]
    stale: bool
    source: Source
    state: State
    error: str | None


class Failure(Shape, frozen=True):
    key: str
    error: str


# kw_only: ProjectReport's own field comes first in its answer, before the counts.
class Report(Shape, frozen=True, kw_only=True):
    """What a refresh did, and whether it ended within REFRESH_TIMEOUT."""

    requested: Count
    refreshed: Count
    unchanged: Count
    not_found: Count
    failed: Count
    errors: list[Failure]
    duration_ms: Count
    complete: Annotated[
        bool,
        msgspec.Meta(
            description="false: REFRESH_TIMEOUT passed; the counts are what is done so far,"
            " and the rest goes on"
        ),
    ]


class ProjectReport(Report, frozen=True):
    project_id: Annotated[str, msgspec.Meta(pattern=PROJECT_ID_PATTERN.pattern)]


class DeadLetter(Shape, frozen=True):
    """A letter; in a list its body is cut short (`truncated`), asked by id it is whole."""

    id: Annotated[int, msgspec.Meta(ge=1)]
    delivery_id: str | None
    error: str
    received_at: Time
    body: str
    body_bytes: Count
    truncated: bool


class DeadLetters(Shape, frozen=True):
    dead_letters: list[DeadLetter]
    next: int | None


DOCUMENTED = (Issue, Report, ProjectReport, DeadLetter, DeadLetters)


def shape_issue(
    cached: CachedIssue, ttl: float, now: datetime, verified_at: datetime | None = None
) -> Issue:
    """The issue as GET answers it at `now`: stale once last known current more than `ttl`
    seconds ago, by its own read or a later sync round of its project that found no change."""
    issue = cached.issue
    known = cached.fetched_at if verified_at is None else max(cached.fetched_at, verified_at)
    age = max(0.0, (now - known).total_seconds())
    status = issue.status
    assignee = issue.assignee
    return Issue(
        key=issue.key,
        id=str(issue.id),
        status=None if status is None else Status(status.id, status.name, status.category),
        summary=issue.summary,
        assignee=None if assignee is None else Assignee(assignee.account_id, assignee.display_name),
        priority=issue.priority,
        jira_updated_at=render_time(issue.updated),
        fetched_at=render_time(cached.fetched_at),
        age_seconds=round(age, 3),
        stale=age > ttl,
        source=cached.source,
        state=cached.state,
        error=cached.error,
    )


def shape_report(report: refresh.Report, complete: bool) -> Report:
    end = report.finished if report.finished is not None else time.monotonic()
    return Report(
        requested=max(report.asked, len(report.results)),
        refreshed=report.count("refreshed"),
        unchanged=report.count("unchanged"),
        not_found=report.count("not_found"),
        failed=report.count("failed"),
        errors=[
            Failure(key, result.error)
            for key, result in report.results.items()
            if result.error is not None
        ],
        duration_ms=round((end - report.started) * 1000),
        complete=complete,
    )


def shape_project_report(project_id: str, report: refresh.Report, complete: bool) -> ProjectReport:
    counts = msgspec.structs.asdict(shape_report(report, complete))
    return ProjectReport(project_id=project_id, **counts)


def shape_letter(letter: webhooks.DeadLetter) -> DeadLetter:
    return DeadLetter(
        id=letter.id,
        delivery_id=letter.delivery_id,
        error=letter.error,
        received_at=render_time(letter.received_at),
        body=letter.body,
        body_bytes=letter.body_bytes,
        truncated=letter.truncated,
    )


def schemas(
    ref_template: str, documented: tuple[type[Shape], ...] = DOCUMENTED
) -> dict[str, dict[str, Any]]:
    """The JSON schemas of the documented shapes and of those they hold, by name."""
    _, components = msgspec.json.schema_components(documented, ref_template=ref_template)
    return components
