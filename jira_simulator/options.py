"""The simulator's knobs: one mutable dataclass, so tests and /_sim can turn them at runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Flavor = Literal["cloud", "dc"]

# Jira localizes status category names for the caller; only the category key is stable.
ENGLISH_CATEGORIES: dict[str, str] = {
    "new": "To Do",
    "indeterminate": "In Progress",
    "done": "Done",
}
GERMAN_CATEGORIES: dict[str, str] = {
    "new": "Aufgaben",
    "indeterminate": "In Arbeit",
    "done": "Fertig",
}

# What a webhook set up as the cache asks for registers (service.jira.webhooks.EVENTS), so that
# `check` passes against the webhook configured with --webhook-url; only some are ever sent.
ISSUE_EVENTS: frozenset[str] = frozenset(
    {
        "jira:issue_created",
        "jira:issue_updated",
        "jira:issue_deleted",
        "comment_created",
        "comment_updated",
        "comment_deleted",
    }
)


@dataclass(slots=True)
class SimOptions:
    """How the simulated site behaves; every field may change while it runs."""

    flavor: Flavor = "cloud"
    latency: float = 0.0
    rate_limit: float = 0.0
    burst: int = 20
    retry_after: float | None = None
    omit_retry_after: bool = False
    email: str | None = None
    token: str | None = field(default=None, repr=False)
    pat: str | None = field(default=None, repr=False)
    timezone: str = "America/Chicago"
    category_names: dict[str, str] = field(default_factory=lambda: dict(GERMAN_CATEGORIES))
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_secret_in_query: bool = False
    webhook_events: frozenset[str] = ISSUE_EVENTS
    webhook_timeout: float = 5.0
    webhook_backoff: float = 0.05
    webhook_max_tries: int = 5
    seed: int = 0
    # Seconds a write takes to reach the search index: until then search does not find it.
    search_lag: float = 0.0
    # Seconds Jira's clock is ahead of the real one (negative: behind); `updated` stamps,
    # relative JQL dates and serverInfo all read it.
    clock_offset: float = 0.0
    # Compare `updated` truncated to its minute in JQL, as real Jira may (JQL dates have
    # minute precision): a change at :59.5 is then older than "-1m" a few seconds later.
    minute_precision: bool = False

    @property
    def checks_credentials(self) -> bool:
        return bool((self.email and self.token) or self.pat)
