"""Injected trouble: the next N requests fail with 5xx or hang, optionally on one endpoint."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Failure:
    status: int
    retry_after: float | None
    endpoint: str | None
    count: int


@dataclass(slots=True)
class Hang:
    seconds: float
    endpoint: str | None
    count: int


class Faults:
    """Queued failures and hangs, each used up by the requests it matches."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []
        self.hangs: list[Hang] = []

    def fail_next(
        self,
        count: int,
        status: int = 503,
        retry_after: float | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.failures.append(Failure(status, retry_after, endpoint, count))

    def hang_next(self, count: int, seconds: float, endpoint: str | None = None) -> None:
        self.hangs.append(Hang(seconds, endpoint, count))

    def clear(self) -> None:
        self.failures.clear()
        self.hangs.clear()

    def take_failure(self, endpoint: str) -> Failure | None:
        failure = next((f for f in self.failures if f.endpoint in (None, endpoint)), None)
        if failure is not None:
            failure.count -= 1
            self.failures = [f for f in self.failures if f.count > 0]
        return failure

    def take_hang(self, endpoint: str) -> float:
        hang = next((h for h in self.hangs if h.endpoint in (None, endpoint)), None)
        if hang is None:
            return 0.0
        hang.count -= 1
        self.hangs = [h for h in self.hangs if h.count > 0]
        return hang.seconds
