"""One load run, measured: the generator's summary, the cores each party used, a profile."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bench.cpu import CpuMeter, wait_quiet
from bench.procs import run_load
from bench.profile import profiled

QUIET_LIMIT = [10.0]  # seconds a run waits for other work on the machine to calm down


async def measured(
    server_pid: int, spec: dict[str, Any], profile: str | None = None
) -> dict[str, Any]:
    """Run the generator against the server `server_pid`; answer its summary with `cores`."""
    calm = await wait_quiet(server_pid, QUIET_LIMIT[0])
    with CpuMeter(server_pid) as meter, profiled(server_pid, profile):
        result = await run_load(spec)
    result["cores"] = meter.shares()
    result["quiet_wait"] = calm
    # Per request, warm-up included: the server is idle before and after the generator.
    seconds, total = meter.seconds(), max(1, result["total"])
    result["cpu_us_per_request"] = {
        name: round(seconds[name] / total * 1e6) for name in ("serve", "postgres")
    }
    return result


CROWDED = 0.3  # cores used by other work during a run above which a run with a target retries
Attempt = Callable[[int], Awaitable[dict[str, Any]]]


async def calmest(attempt: Attempt, retry: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run attempt(0); if other work crowded it and `retry`, attempt(1) too (never more).

    Answers the attempt during which other work used the fewest cores, and all attempts.
    """
    attempts = [await attempt(0)]
    if retry and attempts[0]["cores"]["others"] > CROWDED:
        attempts.append(await attempt(1))
    return min(attempts, key=lambda result: result["cores"]["others"]), attempts
