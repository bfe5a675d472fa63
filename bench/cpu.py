"""CPU seconds spent during a run: by `serve`, by PostgreSQL, by everyone else on the machine.

Two cores are shared by the server under test, PostgreSQL, the load generator and whatever
other work the machine runs; these numbers say which of them a figure was limited by.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs in the venv; only bench uses it

ROOT = Path(__file__).resolve().parent.parent
POSTMASTER_PID = ROOT / ".data" / "bench" / "postgres" / "postmaster.pid"


def _tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _postmaster() -> int:
    return int(POSTMASTER_PID.read_text().split()[0])


def _busy() -> float:
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + times.irq + times.softirq)


def _mine() -> float:
    own = os.times()
    return own.user + own.system + own.children_user + own.children_system


@dataclass
class CpuMeter:
    """`with CpuMeter(serve_pid) as meter:` then `meter.shares()`: cores used, by whom."""

    serve_pid: int
    start: dict[str, float] = field(default_factory=dict)
    end: dict[str, float] = field(default_factory=dict)

    def _read(self) -> dict[str, float]:
        serve = _tree(self.serve_pid)
        ours = {process.pid for process in serve}
        rest = [process for process in _tree(os.getpid())[1:] if process.pid not in ours]
        return {
            "wall": time.monotonic(),
            "serve": _seconds(serve),
            "postgres": _seconds(_tree(_postmaster())),
            # The driver, the simulator, the bare app, and load generators that have exited.
            "bench": _mine() + _seconds(rest),
            "machine": _busy(),
        }

    def __enter__(self) -> CpuMeter:
        self.start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = self._read()

    def seconds(self) -> dict[str, float]:
        """CPU seconds used: serve, postgres, the bench's own processes, others; and wall."""
        used = {name: self.end[name] - self.start[name] for name in self.start}
        machine = used.pop("machine")
        others = machine - sum(value for name, value in used.items() if name != "wall")
        used["others"] = max(0.0, others)
        return used

    def shares(self) -> dict[str, float]:
        """Cores used on average over the wall time."""
        used = self.seconds()
        wall = used.pop("wall")
        return {name: round(value / wall, 2) for name, value in used.items()}


async def wait_quiet(serve_pid: int, limit: float, threshold: float = 0.25) -> dict[str, float]:
    """Wait (at most `limit` s) for half a second in which others used under `threshold` cores.

    Other sessions share this machine; a figure measured while they compile or test says
    more about them than about us. Answers how long it waited and what others used last.
    """
    start = time.monotonic()
    others = float("nan")
    while True:
        with CpuMeter(serve_pid) as meter:
            await asyncio.sleep(0.5)
        others = meter.shares()["others"]
        waited = time.monotonic() - start
        if others < threshold or waited >= limit:
            return {"waited_s": round(waited, 1), "others_before": others}
