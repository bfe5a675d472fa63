"""Frozen dataclasses for cached issues and the one pure normalizer of Jira's JSON."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Category = Literal["new", "indeterminate", "done", "unknown"]
Source = Literal["webhook", "poll", "refresh", "sync"]
State = Literal["ok", "not_found", "deleted", "error"]

# A tuple, not a set: `in` compares, so a key that is a list or an object cannot raise.
CATEGORIES: tuple[str, ...] = ("new", "indeterminate", "done")
KEY_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]*-[1-9][0-9]*$")
PROJECT_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Jira's own keys are far shorter; the bound keeps a key inside PostgreSQL's btree row limit.
MAX_KEY_LENGTH = 255
# Jira's `updated` carries a numeric offset without a colon: 2026-11-26T05:37:14.123-0600.
_JIRA_TIME = re.compile(r"^(.*T\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d):?(\d\d)$")


class InvalidIssueError(ValueError):
    """Jira JSON that cannot be read as an issue."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"Jira issue JSON is unusable: {problem}")
        self.problem = problem


class InvalidKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"{shorten(key)!r} is not a Jira issue key "
            f"(expected e.g. PRJ-7, at most {MAX_KEY_LENGTH} characters)"
        )
        self.key = key


class InvalidProjectIdError(ValueError):
    def __init__(self, project_id: str) -> None:
        super().__init__(
            f"{shorten(project_id)!r} is not a project id (1 to 128 of letters, digits and ._:-)"
        )
        self.project_id = project_id


def shorten(text: str, limit: int = 80) -> str:
    """Text fit to quote in an error message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class Status:
    id: str
    name: str
    category: Category


@dataclass(frozen=True, slots=True)
class Assignee:
    account_id: str
    display_name: str


@dataclass(frozen=True, slots=True)
class Issue:
    """What Jira says about one issue, normalized; the unit that the store writes."""

    id: int
    key: str
    status: Status | None
    summary: str | None
    assignee: Assignee | None
    priority: str | None
    updated: datetime


def normalize_key(key: str) -> str:
    """Upper-case a key and check it against Jira's key format."""
    stripped = key.strip()
    # str.upper() turns some other letters into ASCII ones (the long s into S): keys are ASCII.
    if (
        len(stripped) > MAX_KEY_LENGTH
        or not stripped.isascii()
        or not KEY_PATTERN.fullmatch(stripped.upper())
    ):
        raise InvalidKeyError(key)
    return stripped.upper()


def check_project_id(project_id: str) -> str:
    if not PROJECT_ID_PATTERN.fullmatch(project_id):
        raise InvalidProjectIdError(project_id)
    return project_id


def parse_jira_time(value: str) -> datetime:
    """Parse Jira's timestamp, which keeps the site's offset, into an aware datetime."""
    match = _JIRA_TIME.match(value.strip())
    text = f"{match[1]}{match[2]}:{match[3]}" if match else value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidIssueError(f"updated time {value!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        raise InvalidIssueError(f"updated time {value!r} has no UTC offset")
    try:
        parsed.astimezone(UTC)  # stored and rendered in UTC: 0001-01-01 at +05:00 is not
    except OverflowError:
        raise InvalidIssueError(f"updated time {value!r} is out of range in UTC") from None
    return parsed


def normalize_issue(raw: Any) -> Issue:
    """Read an issue from Jira's REST or webhook JSON; raise InvalidIssueError, nothing else."""
    if not isinstance(raw, dict):
        raise InvalidIssueError("issue is not an object")
    fields = raw.get("fields")
    if not isinstance(fields, dict):
        raise InvalidIssueError("issue has no fields object")
    return Issue(
        id=read_issue_id(raw.get("id")),
        key=read_issue_key(raw.get("key")),
        status=_read_status(fields.get("status")),
        summary=_text(fields.get("summary")),
        assignee=_read_assignee(fields.get("assignee")),
        priority=_text(_get(fields.get("priority"), "name")),
        updated=_read_updated(fields.get("updated")),
    )


def whole_number(text: str, low: int = 0, high: int = 10**18 - 1) -> int | None:
    """`text` as a whole number from `low` to `high`, else None: ASCII digits only (not "²",
    "+1", " 1" or "1_000", which int() takes), at most 18, so PostgreSQL's bigint holds it."""
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        return None
    value = int(text)
    return value if low <= value <= high else None


def read_issue_id(value: Any) -> int:
    """Jira's numeric id, as a number PostgreSQL's bigint holds."""
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    number = whole_number(text)
    if number is None:
        raise InvalidIssueError(
            f"issue id {shorten(repr(value))} is not a number of 1 to 18 digits"
        )
    return number


def read_issue_key(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidIssueError("issue has no key")
    try:
        return normalize_key(value)
    except InvalidKeyError:
        raise InvalidIssueError(f"issue key {shorten(value)!r} is malformed") from None


def _read_updated(value: Any) -> datetime:
    if not isinstance(value, str):
        raise InvalidIssueError("issue has no fields.updated")
    return parse_jira_time(value)


def _read_status(value: Any) -> Status | None:
    if not isinstance(value, dict):
        return None
    # The category's name is localized ("Erledigt"); only its key is stable.
    key = _get(value.get("statusCategory"), "key")
    category: Category = key if key in CATEGORIES else "unknown"
    return Status(
        id=_text(str(value.get("id") or "")) or "",
        name=_text(value.get("name")) or "",
        category=category,
    )


def _read_assignee(value: Any) -> Assignee | None:
    if not isinstance(value, dict):
        return None
    # Cloud identifies people by accountId; Data Center by name/key.
    account = _text(value.get("accountId") or value.get("key") or value.get("name"))
    name = _text(value.get("displayName") or account)
    if account is None or name is None:
        return None
    return Assignee(account_id=account, display_name=name)


def _get(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else None


def _text(value: Any) -> str | None:
    return storable(value) if isinstance(value, str) else None


def render_time(value: datetime) -> str:
    """A time as every answer shows it: UTC, milliseconds, `Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def storable(text: str) -> str:
    """The text without what JSON may carry but PostgreSQL cannot: NUL, lone surrogates."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode()


@dataclass(frozen=True, slots=True)
class CachedIssue:
    """An issue as the cache holds it: Jira's fields plus when and how they arrived."""

    issue: Issue
    fetched_at: datetime
    source: Source
    state: State
    error: str | None
    failures: int


def project_of(key: str) -> str | None:
    """A key's Jira project: what precedes its dash ("PRJ" in "PRJ-7"); None for a numeric id.

    The one definition in Python; PostgreSQL's is jira_project(key) (migration 011).
    """
    project, dash, _ = key.partition("-")
    return project if dash else None
