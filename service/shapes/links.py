"""A project's links and batch reads: the answers that hold issues."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from service.model import PROJECT_ID_PATTERN
from service.shapes import Issue, Key, Shape, Time

ProjectId = Annotated[str, msgspec.Meta(pattern=PROJECT_ID_PATTERN.pattern)]


class IssueBatch(Shape, frozen=True):
    issues: list[Issue]
    missing: list[Key]


class Link(Shape, frozen=True):
    key: Key
    linked_at: Time
    state: Literal["not_found"] | None
    issue: Issue | None


class LinkList(Shape, frozen=True):
    project_id: ProjectId
    links: list[Link]


class LinkResult(Shape, frozen=True):
    project_id: ProjectId
    key: Key
    created: bool
    state: Literal["ok", "not_found", "deleted", "error", "pending"]
    issue: Issue | None


DOCUMENTED = (IssueBatch, Link, LinkList, LinkResult)
