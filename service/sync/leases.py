"""Leases held by this process: one owner name, and renewal while the work goes on.

Every lease (sync projects, poll claims, subscriptions) is a row in PostgreSQL with an owner
and an end. They are short, and renewed every third of their length while the work runs, so
a replica killed mid-work holds nothing for longer than one lease: another takes over and
says so in the log. Rows, not session-level advisory locks: those do not survive PgBouncer
in transaction mode, and a row lease also names its owner for the takeover's log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from service.sync.background import task_during

log = logging.getLogger(__name__)
SHORTEST_LEASE = 2.0  # seconds: below this a busy database could let a live lease lapse


def owner_id() -> str:
    """A name for this process's leases, unique across replicas and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def lease_for(interval: float, longest: float) -> float:
    """A lease as long as the work's interval (at most `longest`): a dead owner's work is
    free again within one interval, and done by another replica's next run."""
    if interval <= 0:
        return longest
    return max(SHORTEST_LEASE, min(longest, interval))


@contextlib.asynccontextmanager
async def renewing(renew: Callable[[], Awaitable[object]], lease: float) -> AsyncIterator[None]:
    """Run the body while `renew` runs every third of `lease` in the background."""

    async def keep() -> None:
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await renew()
            except Exception as exc:  # the next try may work; the lease runs out otherwise
                log.warning("lease not renewed", extra={"error": f"{type(exc).__name__}: {exc}"})

    async with task_during(keep()):
        yield


def log_takeover(what: str, taken: Iterable[tuple[str, str]]) -> None:
    """One line per former owner whose expired lease this process took over."""
    by_owner: dict[str, list[str]] = {}
    for item, owner in taken:
        by_owner.setdefault(owner, []).append(item)
    for owner, items in by_owner.items():
        log.warning(
            "took over %s %s from %s, whose lease ran out (a replica died or stalled)",
            what,
            ", ".join(sorted(items)[:20]) + (f" (+{len(items) - 20})" if len(items) > 20 else ""),
            owner,
            extra={"takeover": what, "count": len(items), "from_owner": owner},
        )
