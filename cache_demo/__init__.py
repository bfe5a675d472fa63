"""`jira-status-cache demo`: the cache, live, against a simulated Jira whose team keeps working."""

from __future__ import annotations

from .command import main

__all__ = ["main"]
