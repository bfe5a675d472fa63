"""Reads from Jira: issues in bulk by key (settling the keys an answer leaves out), one issue,
and Jira's clock. The requests themselves go through `transport`; errors are in `errors`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from service.jira.answer import Reading, Tally, check_key, check_keys, merge
from service.jira.errors import (
    CircuitOpenError,
    JiraAuthError,
    JiraError,
    JiraRateLimitedError,
    JiraUnavailableError,
    SearchRefusedError,
    unknown_keys_in,
    unknown_projects_in,
)
from service.jira.paging import chunks, issues_of, search_pages
from service.jira.transport import Call, Stats, Transport, open_session
from service.model import Issue, normalize_issue, parse_jira_time

__all__ = [
    "FIELDS",
    "CircuitOpenError",
    "JiraAuthError",
    "JiraClient",
    "JiraError",
    "JiraRateLimitedError",
    "JiraUnavailableError",
    "ServerClock",
    "Stats",
    "open_session",
    "unknown_projects_in",
]

FIELDS = ("status", "summary", "assignee", "priority", "updated")
T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerClock:
    """Jira's clock against ours: `skew` seconds ahead (negative: behind), to within `error`."""

    skew: float
    error: float  # half the round trip: the answer was stamped somewhere inside it


class JiraClient(Transport):
    """Reads issues from one Jira site."""

    async def server_clock(self) -> ServerClock:
        """Measure Jira's clock (`serverInfo` → `serverTime`) against ours."""
        sent = time.time()
        _, body = await self.call("GET", "/serverInfo")
        received = time.time()
        stamp = body.get("serverTime") if isinstance(body, dict) else None
        if not isinstance(stamp, str):
            raise JiraError("GET serverInfo", 200, "the answer has no serverTime")
        middle = (sent + received) / 2
        return ServerClock(parse_jira_time(stamp).timestamp() - middle, (received - sent) / 2)

    async def read_issue(self, key: str) -> Issue | None:
        """Read one issue by key or numeric id; None when Jira has none we may see."""
        raw = await self._get_issue(check_key(key))
        return None if raw is None else normalize_issue(raw)

    async def read_issues(self, keys: Sequence[str]) -> Reading:
        async with contextlib.aclosing(self.read_in_parts(keys)) as parts:
            return merge([part async for part in parts])

    async def read_in_parts(self, keys: Sequence[str]) -> AsyncGenerator[Reading]:
        """Read the keys in bulk, a reading per chunk as it arrives, then one for the rest.

        The last reading settles the keys no chunk answered: not found, moved or unusable.
        A caller can store each part at once, so a read cut short keeps what it read.
        """
        wanted, rest = check_keys(keys)
        # One key is one GET, which also answers a moved key: no bulk call needed.
        bulk = wanted if len(wanted) > 1 else []
        fetch = self._search if self._flavor == "dc" else self._bulkfetch_part
        seen: set[str] = set()
        async with contextlib.aclosing(_as_completed(map(fetch, self._chunks(bulk)))) as parts:
            async for part in parts:
                seen |= part.seen | set(part.not_found)
                yield part.reading()
        await self._settle([key for key in wanted if key not in seen], rest)
        yield rest.reading()

    async def _settle(self, keys: list[str], tally: Tally) -> None:
        """Settle keys a bulk answer left out: deleted, hidden, moved, or dropped transiently.

        A search by key answers them in bounded batches, and its 400 names the unknown ones;
        a moved key answers under its new key, which pairs it up when it is the only one left.
        """
        if len(keys) == 1:
            tally.confirm(keys[0], await self._get_issue(keys[0]))
            return
        for found in await _run_all(map(self._search, self._chunks(keys))):
            tally.merge(found)
        asked = set(keys)
        strangers = [i for i in tally.issues.values() if not {i.key, str(i.id)} & asked]
        unsettled = [key for key in keys if key not in tally.seen and key not in tally.not_found]
        if len(unsettled) == 1 and len(strangers) == 1:
            tally.moved[unsettled[0]] = strangers[0].id
            return
        for key, raw in zip(
            unsettled, await _run_all(map(self._get_issue, unsettled)), strict=True
        ):
            tally.confirm(key, raw)

    async def _get_issue(self, key: str) -> Any:
        path = f"{self._api}/issue/{key}"
        route = f"GET {self._api}/issue/{{key}}"
        call = Call("GET", path, route, (200, 404), params={"fields": ",".join(FIELDS)})
        status, body = await self._send(call)
        return None if status == 404 else body

    async def _bulkfetch_part(self, keys: list[str]) -> Tally:
        body = {"issueIdsOrKeys": keys, "fields": list(FIELDS)}
        call = Call("POST", f"{self._api}/issue/bulkfetch", body=body)
        _, answer = await self._send(call)
        return Tally.of(_issues(call, answer))

    async def _search(self, keys: list[str]) -> Tally:
        """Search `key in (...)`, dropping the keys Jira names as unknown, page by page."""
        unknown: list[str] = []
        found: list[Any] = []
        while keys:
            try:
                found = [raw async for page in search_pages(self, _query(keys)) for raw in page]
                break
            except SearchRefusedError as refused:
                named = unknown_keys_in(refused.texts) & set(keys)
                if not named:
                    raise refused.plain() from None
                logger.info("Jira does not know %s; searching again without", sorted(named))
                unknown += [key for key in keys if key in named]
                keys = [key for key in keys if key not in named]
        tally = Tally.of(found)
        tally.not_found.extend(unknown)
        return tally

    def _chunks(self, keys: list[str]) -> list[list[str]]:
        return chunks(keys, self._batch)


def _query(keys: list[str]) -> dict[str, Any]:
    # Keys are quoted; numeric ids are not, since JQL reads a quoted number as a key.
    terms = ", ".join(key if key.isdigit() else f'"{key}"' for key in keys)
    return {"jql": f"key in ({terms})", "maxResults": len(keys), "fields": list(FIELDS)}


def _issues(call: Call, body: Any) -> list[Any]:
    return issues_of(call.endpoint, body)


async def _as_completed(coros: Iterable[Coroutine[Any, Any, T]]) -> AsyncGenerator[T]:
    """Run together, yielding results as they come; on a failure or a close cancel the rest."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _run_all(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run together; on the first failure cancel the rest and raise that error, unwrapped."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coro) for coro in coros]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]
