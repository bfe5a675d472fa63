"""Keeping the cache fresh: read-through, refresh, the poller, its schedule, the memo."""
