"""A Jira search followed page by page, and work cut into bounded requests: written once.

Cloud's enhanced search (`/search/jql`) pages with an opaque `nextPageToken`, absent on the
last page (which also says `isLast`); Data Center's `/search` pages with `startAt` against a
`total`. Every search of ours, by key or by change, goes through `search_pages`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from service.jira.errors import JiraError, SearchRefusedError

if TYPE_CHECKING:
    from service.jira.transport import Transport

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """`items` in lists of at most `size`, in order."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


async def search_pages(transport: Transport, query: dict[str, Any]) -> AsyncIterator[list[Any]]:
    """Each page's raw issues, to the last page; a 400 raises SearchRefusedError."""
    dc = transport.flavor == "dc"
    # Cloud removed the old search (410 Gone); Data Center has only the old one.
    path = "/search" if dc else "/search/jql"
    cursor: str | int | None = None
    while True:
        body = dict(query)
        if dc:
            body["startAt"] = cursor or 0
        elif cursor is not None:
            body["nextPageToken"] = cursor
        status, answer = await transport.call("POST", path, body, accept=(200, 400))
        endpoint = f"POST {transport.api}{path}"
        if status == 400:
            raise SearchRefusedError(endpoint, answer)
        issues = issues_of(endpoint, answer)
        yield issues
        cursor = _next(answer, cursor, dc)
        if not issues or cursor is None:
            return


def issues_of(endpoint: str, answer: Any) -> list[Any]:
    issues = answer.get("issues") if isinstance(answer, dict) else None
    if not isinstance(issues, list):
        raise JiraError(endpoint, 200, "the answer has no list of issues")
    return issues


def _next(answer: dict[str, Any], cursor: str | int | None, dc: bool) -> str | int | None:
    """The next page's cursor: Data Center's offset, Cloud's token; None after the last."""
    if dc:
        start = int(cursor or 0) + len(answer.get("issues") or [])
        total = answer.get("total")
        return start if isinstance(total, int) and start < total else None
    token = answer.get("nextPageToken")
    return token if isinstance(token, str) and token and not answer.get("isLast") else None
