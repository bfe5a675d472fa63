"""A Reading: what Jira said about a batch of requested keys, assembled from its answers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.model import InvalidIssueError, InvalidKeyError, Issue, normalize_issue, normalize_key


@dataclass(frozen=True, slots=True)
class Reading:
    """What Jira said about a batch of requested keys (or numeric ids)."""

    issues: list[Issue]
    moved: dict[str, int]  # requested key -> id of the issue that now has another key
    not_found: list[str]
    invalid: list[tuple[str, str]]  # (key, problem): a malformed key or unusable issue JSON


@dataclass(slots=True)
class Tally:
    """The reading under construction, and every key and id Jira has answered for."""

    seen: set[str] = field(default_factory=set)
    issues: dict[int, Issue] = field(default_factory=dict)
    moved: dict[str, int] = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, raws: Iterable[Any]) -> Tally:
        tally = cls()
        for raw in raws:
            tally.add(raw)
        return tally

    def merge(self, other: Tally) -> None:
        self.seen |= other.seen
        self.issues |= other.issues
        self.moved |= other.moved
        self.not_found += other.not_found
        self.invalid += other.invalid

    def add(self, raw: Any, label: str | None = None) -> Issue | None:
        self.seen.update(identifiers(raw))
        try:
            issue = normalize_issue(raw)
        except InvalidIssueError as exc:
            self.invalid.append((label or label_of(raw), exc.problem))
            return None
        self.issues[issue.id] = issue
        return issue

    def confirm(self, key: str, raw: Any) -> None:
        if raw is None:
            self.not_found.append(key)
        elif (issue := self.add(raw, key)) and key not in (issue.key, str(issue.id)):
            self.moved[key] = issue.id

    def reading(self) -> Reading:
        issues = list(self.issues.values())
        return Reading(issues, self.moved, self.not_found, self.invalid)


def merge(readings: Iterable[Reading]) -> Reading:
    """One reading of the parts a bulk read arrived in."""
    whole = Tally()
    for part in readings:
        whole.issues.update((issue.id, issue) for issue in part.issues)
        whole.moved.update(part.moved)
        whole.not_found.extend(part.not_found)
        whole.invalid.extend(part.invalid)
    return whole.reading()


def check_key(key: str) -> str:
    """A key upper-cased, or an id without leading zeros; both are then safe in URLs and JQL."""
    text = key.strip()
    return str(int(text)) if text.isascii() and text.isdigit() else normalize_key(text)


def check_keys(keys: Sequence[str]) -> tuple[list[str], Tally]:
    """The usable keys, checked and de-duplicated, and a tally listing the others as invalid."""
    wanted: dict[str, None] = {}
    tally = Tally()
    for key in keys:
        try:
            wanted[check_key(key)] = None
        except InvalidKeyError as exc:
            tally.invalid.append((key, str(exc)))
    return list(wanted), tally


def identifiers(raw: Any) -> set[str]:
    if not isinstance(raw, dict):
        return set()
    values = (raw.get("key"), raw.get("id"))
    return {str(value).upper() for value in values if isinstance(value, str | int)}


def label_of(raw: Any) -> str:
    if isinstance(raw, dict):
        return str(raw.get("key") or raw.get("id") or "?")
    return "?"
