"""The simulated Jira site in memory: projects, people, statuses, issues and their keys."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from .options import SimOptions


@dataclass(frozen=True, slots=True)
class Status:
    id: str
    name: str
    category: str


@dataclass(frozen=True, slots=True)
class User:
    account_id: str
    name: str
    key: str
    display_name: str


@dataclass(slots=True)
class SimIssue:
    id: int
    key: str
    project: str
    summary: str
    status: Status
    priority: str
    assignee: User | None
    created: datetime
    updated: datetime
    status_changed: datetime


class IssueNotFoundError(LookupError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No issue by the id or key of {ref!r} exists in the simulator")
        self.ref = ref


class UnknownStatusError(LookupError):
    def __init__(self, status: str) -> None:
        super().__init__(f"No status by the id or name of {status!r} exists in the simulator")


class UnknownUserError(LookupError):
    def __init__(self, user: str) -> None:
        super().__init__(f"No user by the accountId, name or key of {user!r} exists")


STATUSES: tuple[Status, ...] = (
    Status("1", "To Do", "new"),
    Status("3", "In Progress", "indeterminate"),
    Status("10001", "In Review", "indeterminate"),
    Status("10002", "Done", "done"),
)
PRIORITIES: dict[str, str] = {"Highest": "1", "High": "2", "Medium": "3", "Low": "4", "Lowest": "5"}
_NEXT_CATEGORY = {"new": "indeterminate", "indeterminate": "done", "done": "new"}
_PEOPLE = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov")
_WORDS = ("Fix", "Add", "Remove", "Refactor", "Document", "Speed up", "Test", "Review")
_THINGS = ("login form", "export job", "search page", "billing sync", "audit log", "API docs")


def make_users(seed: int) -> tuple[User, ...]:
    """Cloud accountIds and Data Center name/key pairs, the same for a given seed."""
    space = uuid.UUID(int=seed)
    return tuple(
        User(
            account_id=f"712020:{uuid.uuid5(space, person)}",
            name=person.split()[0][0].lower() + person.split()[1].lower(),
            key=f"JIRAUSER{10100 + number}",
            display_name=person,
        )
        for number, person in enumerate(_PEOPLE)
    )


def find_status(ref: str) -> Status:
    for status in STATUSES:
        if ref in (status.id, status.name) or ref.casefold() == status.name.casefold():
            return status
    raise UnknownStatusError(ref)


def next_status(current: Status) -> Status:
    """The first status in the next category, so a transition always changes the category."""
    wanted = _NEXT_CATEGORY[current.category]
    return next(status for status in STATUSES if status.category == wanted)


class Site:
    """Issues by id, every key an issue ever had, and a clock in the site's time zone."""

    def __init__(self, timezone: str, seed: int = 0, options: SimOptions | None = None) -> None:
        self.zone = ZoneInfo(timezone)
        self.options = options or SimOptions(timezone=timezone, seed=seed)
        self.users = make_users(seed)
        self.issues: dict[int, SimIssue] = {}
        self.projects: dict[str, str] = {}
        self.hidden: set[int] = set()
        self._keys: dict[str, int] = {}
        self._numbers: dict[str, int] = {}
        self._ids = itertools.count(10001)
        self._random = random.Random(seed)  # noqa: S311 -- made-up data, not secrets
        self._last = datetime.fromtimestamp(0, self.zone)

    def clock(self) -> datetime:
        """The site's wall clock: ours, shifted by the clock_offset option."""
        return datetime.now(self.zone) + timedelta(seconds=self.options.clock_offset)

    def now(self) -> datetime:
        """The site's time, in milliseconds, strictly after every earlier stamp."""
        moment = to_millis(self.clock())
        self._last = max(moment, self._last + timedelta(milliseconds=1))
        return self._last

    def find(self, ref: str) -> SimIssue | None:
        """An issue by id, current key or former key, ignoring case as Jira does."""
        text = ref.strip().upper()
        number = int(text) if text.isdigit() else self._keys.get(text)
        return self.issues.get(number) if number is not None else None

    def lookup(self, ref: str) -> SimIssue | None:
        """What a caller may see: hidden issues answer as if they did not exist."""
        issue = self.find(ref)
        return None if issue is None or issue.id in self.hidden else issue

    def get(self, ref: str) -> SimIssue:
        issue = self.find(ref)
        if issue is None:
            raise IssueNotFoundError(ref)
        return issue

    def user(self, ref: str) -> User:
        for user in self.users:
            if ref in (user.account_id, user.name, user.key, user.display_name):
                return user
        raise UnknownUserError(ref)

    def ensure_project(self, project: str) -> str:
        return self.projects.setdefault(project.upper(), str(10000 + len(self.projects)))

    def new_key(self, project: str) -> str:
        self.ensure_project(project)
        number = self._numbers.get(project.upper(), 0) + 1
        self._numbers[project.upper()] = number
        return f"{project.upper()}-{number}"

    def add(
        self,
        project: str,
        summary: str | None = None,
        status: str = "To Do",
        assignee: str | None = None,
        priority: str = "Medium",
        updated: datetime | None = None,
    ) -> SimIssue:
        moment = updated or self.now()
        issue = SimIssue(
            id=next(self._ids),
            key=self.new_key(project),
            project=project.upper(),
            summary=summary or self._summary(),
            status=find_status(status),
            priority=priority,
            assignee=self.user(assignee) if assignee else None,
            created=moment - timedelta(days=1),
            updated=moment,
            status_changed=moment,
        )
        self.issues[issue.id] = issue
        self._keys[issue.key] = issue.id
        return issue

    def seed(self, count: int, projects: Iterable[str]) -> list[SimIssue]:
        """Issues spread over the projects, with statuses and past `updated` times mixed."""
        names = list(projects)
        return [self._seed_one(names[number % len(names)]) for number in range(count)]

    def _seed_one(self, project: str) -> SimIssue:
        past = datetime.now(self.zone) - timedelta(minutes=self._random.randint(5, 60 * 24 * 30))
        people = [None, *(user.account_id for user in self.users)]
        return self.add(
            project,
            status=self._random.choice(STATUSES).name,
            assignee=self._random.choice(people),
            priority=self._random.choice(list(PRIORITIES)),
            updated=to_millis(past),
        )

    def rekey(self, issue: SimIssue, project: str) -> str:
        """Give the issue a key in another project; the old key keeps pointing at it."""
        old = issue.key
        issue.key = self.new_key(project)
        issue.project = project.upper()
        self._keys[issue.key] = issue.id
        return old

    def touch(self, issue: SimIssue) -> datetime:
        issue.updated = self.now()
        return issue.updated

    def remove(self, issue: SimIssue) -> None:
        del self.issues[issue.id]
        self.hidden.discard(issue.id)
        for key in [key for key, number in self._keys.items() if number == issue.id]:
            del self._keys[key]

    def _summary(self) -> str:
        return f"{self._random.choice(_WORDS)} the {self._random.choice(_THINGS)}"


def to_millis(moment: datetime) -> datetime:
    """Jira keeps milliseconds; drop the rest so stamps round-trip through JSON exactly."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
