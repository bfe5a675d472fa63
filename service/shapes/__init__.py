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
from service.storage import inbox
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
    verified_at: Annotated[
        Time,
        msgspec.Meta(
            description="when the issue was last known current: the later of its own last"
            " read from Jira (fetched_at), which may find the version already served, and its"
            " Jira project's last successful sync; age_seconds counts from it",
        ),
    ]
    age_seconds: Annotated[
        float,
        msgspec.Meta(
            ge=0,
            description="seconds since verified_at",
        ),
    ]
    stale: bool
    source: Annotated[
        Source,
        msgspec.Meta(
            description="who delivered the version served; a later read that found it"
            " unchanged moves verified_at, not this",
        ),
    ]
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


class ErrorDetail(Shape, frozen=True):
    code: Annotated[str, msgspec.Meta(description="stable, for callers to branch on")]
    message: str


class Error(Shape, frozen=True):
    """Every failure's answer; each operation lists, per status, the codes it can answer."""

    error: ErrorDetail


def error_json(code: str, message: str) -> bytes:
    return msgspec.json.encode(Error(ErrorDetail(code, message)))


DOCUMENTED = (Issue, Report, ProjectReport, DeadLetter, DeadLetters, Error)


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
        verified_at=render_time(known),
        age_seconds=round(age, 3),
        stale=age > ttl,
        source=cached.source,
        state=cached.state,
        error=cached.error,
    )


class Encoded:
    """Issues as GET answers them, encoded, kept per cached issue: a memo hit then encodes
    only what changes with the clock (verified_at, age_seconds, stale).

    Keyed by the CachedIssue object, which the memo hands out again on each hit; the object
    is held, so its id is not reused while it is a key. Emptied whole past `size`.
    """

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self._parts: dict[int, tuple[CachedIssue, bytes, bytes, str]] = {}
        self._times: dict[datetime, str] = {}

    def issue(
        self, cached: CachedIssue, ttl: float, now: datetime, verified: datetime | None
    ) -> bytes:
        """The same bytes as msgspec.json.encode(shape_issue(cached, ttl, now, verified))."""
        parts = self._parts.get(id(cached))
        if parts is None or parts[0] is not cached:
            parts = self._split(cached)
        _, head, tail, fetched = parts
        known = cached.fetched_at if verified is None else max(cached.fetched_at, verified)
        age = max(0.0, (now - known).total_seconds())
        at = fetched if known is cached.fetched_at else self._time(known)
        stale = b"true" if age > ttl else b"false"
        return b"".join(
            (head, b',"verified_at":"', at.encode(), b'","age_seconds":',
             msgspec.json.encode(round(age, 3)), b',"stale":', stale, tail)
        )  # fmt: skip

    def _split(self, cached: CachedIssue) -> tuple[CachedIssue, bytes, bytes, str]:
        whole = msgspec.json.encode(shape_issue(cached, 0.0, cached.fetched_at))
        # Keys are written with bare quotes, which no encoded string value holds.
        head = whole[: whole.index(b',"verified_at":')]
        tail = whole[whole.index(b',"source":', len(head)) :]
        if len(self._parts) >= self.size:
            self._parts.clear()
        parts = self._parts[id(cached)] = (cached, head, tail, render_time(cached.fetched_at))
        return parts

    def _time(self, at: datetime) -> str:
        text = self._times.get(at)
        if text is None:
            if len(self._times) >= 1024:
                self._times.clear()
            text = self._times[at] = render_time(at)
        return text


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


def shape_letter(letter: inbox.DeadLetter) -> DeadLetter:
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
