"""What clients asked for: counts by endpoint and a timed log of every REST request."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

_ENDPOINTS = (
    (re.compile(r"^/rest/api/[^/]+/issue/bulkfetch/?$"), "bulkfetch"),
    (re.compile(r"^/rest/api/[^/]+/issue/[^/]+/?$"), "issue"),
    (re.compile(r"^/rest/api/[^/]+/search/jql/?$"), "search_jql"),
    (re.compile(r"^/rest/api/[^/]+/search/?$"), "search"),
    (re.compile(r"^/rest/api/[^/]+/myself/?$"), "myself"),
    (re.compile(r"^/rest/api/[^/]+/serverInfo/?$"), "server_info"),
    (re.compile(r"^/rest/webhooks/1\.0/webhook(/[^/]*)?/?$"), "webhooks"),
)


def endpoint_of(path: str) -> str:
    """A short name for counters: bulkfetch, issue, search_jql, search, myself, server_info,
    webhooks, other."""
    return next((name for pattern, name in _ENDPOINTS if pattern.match(path)), "other")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request: when it arrived and was answered (monotonic seconds), and how."""

    arrived: float
    answered: float
    method: str
    path: str
    endpoint: str
    status: int
    limited: bool
    retry_after: float | None

    def as_json(self, origin: float) -> dict[str, Any]:
        fields = asdict(self)
        fields["arrived"] = round(self.arrived - origin, 6)
        fields["answered"] = round(self.answered - origin, 6)
        return fields


class Traffic:
    """Counters and the request log; `early()` finds requests that ignored a Retry-After."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.log: list[RequestRecord] = []

    def record(self, entry: RequestRecord) -> None:
        self.counters[entry.endpoint] += 1
        self.log.append(entry)

    def reset(self) -> None:
        self.counters.clear()
        self.log.clear()

    def early(self) -> list[RequestRecord]:
        """Requests that arrived after a 429 or 503 was answered, before its Retry-After passed."""
        waits = [
            (entry.answered, entry.answered + entry.retry_after)
            for entry in self.log
            if entry.retry_after is not None
        ]
        return [
            entry for entry in self.log if any(start < entry.arrived < end for start, end in waits)
        ]
