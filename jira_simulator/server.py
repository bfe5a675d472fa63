"""The Simulator: one object that owns the fake site, its HTTP server and its webhook sender."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from aiohttp import web

from . import events
from .admin import admin_app
from .faults import Faults
from .gate import SIM, gate
from .hooks import Attempt, Deliverer, Switches
from .limits import RateLimiter
from .options import SimOptions
from .registry import Registry, registry_routes
from .render import Shape, render_issue, render_user
from .rest import rest_routes
from .state import SimIssue, Site, find_status, next_status
from .traffic import RequestRecord, Traffic

DEFAULT_PROJECTS = ("ALPHA", "BETA", "GAMMA")


class Simulator:
    """A Jira site in memory behind a real aiohttp server; mutations send Jira's webhooks."""

    def __init__(self, options: SimOptions | None = None) -> None:
        self.options = options or SimOptions()
        self.site = Site(self.options.timezone, self.options.seed, self.options)
        self.traffic = Traffic()
        self.faults = Faults()
        self.limiter = RateLimiter()
        self.registry = Registry(self.options, self.site)
        self.hooks = Deliverer(self.options, self.registry.targets)
        self.base_url = "http://127.0.0.1"
        self.origin = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._changes = itertools.count(10000)
        self._comments = itertools.count(10000)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 picks a free port) and return the base URL."""
        app = web.Application(middlewares=[gate])
        app[SIM] = self
        app.add_routes(rest_routes(self.options.flavor))
        app.add_routes(registry_routes())
        app.add_subapp("/_sim", admin_app(self))
        # Cancel handlers whose client went away, so a hang fault does not outlive its test.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.base_url = f"http://{host}:{self._runner.addresses[0][1]}"
        return self.base_url

    async def stop(self) -> None:
        await self.hooks.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stop()

    def shape(self, version: str = "3", base: str | None = None) -> Shape:
        names = self.options.category_names
        return Shape(base or self.base_url, version, self.options.flavor, names)

    def seed(self, count: int = 200, projects: Iterable[str] = DEFAULT_PROJECTS) -> list[str]:
        """Create issues quietly (no webhooks), spread over the projects; return their keys."""
        return [issue.key for issue in self.site.seed(count, projects)]

    def add_issue(
        self,
        project: str = "ALPHA",
        summary: str | None = None,
        status: str = "To Do",
        assignee: str | None = None,
        priority: str = "Medium",
    ) -> str:
        """Create one issue quietly and return its key."""
        return self.site.add(project, summary, status, assignee, priority).key

    def issue_json(self, ref: str, version: str = "3") -> dict[str, Any]:
        """The issue as GET /rest/api/{version}/issue/{ref} would answer it."""
        return render_issue(self.site.get(ref), self.site, self.shape(version))

    def create_issue(
        self,
        project: str = "ALPHA",
        summary: str | None = None,
        status: str = "To Do",
        assignee: str | None = None,
        priority: str = "Medium",
    ) -> str:
        issue = self.site.add(project, summary, status, assignee, priority)
        items = [*events.status_items(None, issue.status)]
        items.append(events.item("summary", None, None, None, issue.summary))
        self._emit("jira:issue_created", "issue_created", issue, items)
        return issue.key

    def transition(self, ref: str, status: str | None = None) -> str:
        """Move to `status`, or by default to a status in the next category; return its name."""
        issue = self.site.get(ref)
        old = issue.status
        issue.status = find_status(status) if status else next_status(old)
        issue.status_changed = self.site.touch(issue)
        self._emit(
            "jira:issue_updated", "issue_generic", issue, events.status_items(old, issue.status)
        )
        return issue.status.name

    def edit_summary(self, ref: str, summary: str) -> None:
        issue = self.site.get(ref)
        old, issue.summary = issue.summary, summary
        self.site.touch(issue)
        change = events.item("summary", None, old, None, summary)
        self._emit("jira:issue_updated", "issue_updated", issue, [change])

    def assign(self, ref: str, user: str | None) -> None:
        """Assign to a user (accountId, name, key or display name), or unassign with None."""
        issue = self.site.get(ref)
        old, issue.assignee = issue.assignee, self.site.user(user) if user else None
        self.site.touch(issue)
        change = events.assignee_item(old, issue.assignee, self.shape("2"))
        self._emit("jira:issue_updated", "issue_assigned", issue, [change])

    def unassign(self, ref: str) -> None:
        self.assign(ref, None)

    def move(self, ref: str, project: str) -> str:
        """Move to another project under a new key; the old key still finds the issue."""
        issue = self.site.get(ref)
        old_project = issue.project
        old_key = self.site.rekey(issue, project)
        self.site.touch(issue)
        items = events.move_items(old_key, old_project, issue, self.site)
        self._emit("jira:issue_updated", "issue_moved", issue, items)
        return issue.key

    def delete(self, ref: str) -> None:
        issue = self.site.get(ref)
        payload = events.issue_event(
            "jira:issue_deleted",
            "issue_deleted",
            self._webhook_issue(issue),
            self._actor(),
            self.site.now(),
        )
        self.site.remove(issue)
        self.hooks.send(payload, issue)

    def comment(self, ref: str, body: str = "Looks good to me.") -> str:
        """Comment, which bumps `updated`: Jira sends issue_commented and comment_created."""
        issue, shape = self.site.get(ref), self.shape("2")
        stamp = self.site.touch(issue)
        note = events.comment_json(
            next(self._comments), issue, self.site.users[0], body, stamp, shape
        )
        update = events.issue_event(
            "jira:issue_updated",
            "issue_commented",
            self._webhook_issue(issue),
            self._actor(),
            stamp,
        )
        self.hooks.send({**update, "comment": note}, issue)
        self.hooks.send(events.comment_event(note, issue, self.site, shape, stamp), issue)
        return str(note["id"])

    def fail_next(
        self,
        count: int,
        status: int = 503,
        retry_after: float | None = None,
        endpoint: str | None = None,
    ) -> None:
        """The next `count` REST requests (to `endpoint` if given) answer `status`."""
        self.faults.fail_next(count, status, retry_after, endpoint)

    def hang_next(self, count: int, seconds: float, endpoint: str | None = None) -> None:
        self.faults.hang_next(count, seconds, endpoint)

    def forbid(self, *refs: str) -> None:
        """The issues still exist but answer 404 and drop out of bulkfetch and search."""
        self.site.hidden.update(self.site.get(ref).id for ref in refs)

    def allow(self, *refs: str) -> None:
        self.site.hidden.difference_update(self.site.get(ref).id for ref in refs)

    def storm(self, seconds: float) -> None:
        """Answer every REST request with 429 for `seconds`."""
        self.limiter.storm(seconds)

    def clear_faults(self) -> None:
        self.faults.clear()
        self.limiter.calm()
        self.site.hidden.clear()

    @property
    def counters(self) -> dict[str, int]:
        return dict(self.traffic.counters)

    @property
    def requests(self) -> list[RequestRecord]:
        return list(self.traffic.log)

    def early_requests(self) -> list[RequestRecord]:
        """Requests sent before an earlier 429's Retry-After passed; a polite client has none."""
        return self.traffic.early()

    def reset_counters(self) -> None:
        self.traffic.reset()

    @property
    def webhooks(self) -> Switches:
        return self.hooks.switches

    @property
    def attempts(self) -> list[Attempt]:
        return list(self.hooks.attempts)

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.hooks.events)

    async def drain_webhooks(self) -> None:
        await self.hooks.drain()

    def stats(self) -> dict[str, Any]:
        return {
            "counters": self.counters,
            "requests": [entry.as_json(self.origin) for entry in self.traffic.log],
            "early": [entry.as_json(self.origin) for entry in self.traffic.early()],
        }

    def _emit(
        self, event: str, type_name: str, issue: SimIssue, items: list[dict[str, Any]]
    ) -> None:
        log = events.changelog(next(self._changes), items)
        payload = events.issue_event(
            event, type_name, self._webhook_issue(issue), self._actor(), issue.updated, log
        )
        self.hooks.send(payload, issue)

    def _webhook_issue(self, issue: SimIssue) -> dict[str, Any]:
        # Webhooks carry the REST v2 shape, every field, and no `expand`.
        rendered = render_issue(issue, self.site, self.shape("2"))
        del rendered["expand"]
        return rendered

    def _actor(self) -> dict[str, Any]:
        return render_user(self.site.users[0], self.shape("2"))
