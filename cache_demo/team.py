"""A simulated team: it moves issues along in the simulator, which sends Jira's webhooks."""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from jira_simulator import Simulator

FLOW = ("To Do", "In Progress", "In Review", "Done")
_VERBS = ("Fix", "Speed up", "Document", "Retry", "Simplify", "Log")
_THINGS = ("the login form", "the export job", "billing sync", "the audit log", "search")


@dataclass(frozen=True, slots=True)
class Move:
    at: datetime
    key: str
    what: str
    dropped: bool  # the simulator dropped its webhook: only a poll brings it to the cache


class Team:
    """Makes one change every `every` seconds and remembers the latest few.

    The webhooks of a `drop` share of the changes are lost, evenly and the first at once, so
    that a lost webhook and its healing show in the demo's first seconds, not by chance.
    """

    def __init__(self, sim: Simulator, keys: list[str], every: float, drop: float = 0.0) -> None:
        self.sim = sim
        self.keys = keys
        self.every = every
        self.drop = drop
        self.made = 0
        self.moves: deque[Move] = deque(maxlen=6)
        self._random = random.Random()  # noqa: S311 -- a demo's chance, not a secret

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.move()

    def move(self) -> Move:
        key = self._random.choice(self.keys)
        dropped = len(self.sim.hooks.dropped)
        if math.ceil((self.made + 1) * self.drop) > math.ceil(self.made * self.drop):
            self.sim.webhooks.drop_next = 1  # each change sends one webhook: this one's
        self.made += 1
        change = self._random.choices([self.transition, self.assign, self.rename], [6, 2, 2])[0]
        what = change(key)
        move = Move(datetime.now(), key, what, len(self.sim.hooks.dropped) > dropped)
        self.moves.append(move)
        return move

    def transition(self, key: str) -> str:
        old = self.sim.site.get(key).status.name
        new = FLOW[(FLOW.index(old) + 1) % len(FLOW)] if old in FLOW else FLOW[0]
        self.sim.transition(key, new)
        return f"{old} -> {new}"

    def assign(self, key: str) -> str:
        user = self._random.choice(self.sim.site.users)
        self.sim.assign(key, user.account_id)
        return f"assigned to {user.display_name}"

    def rename(self, key: str) -> str:
        summary = f"{self._random.choice(_VERBS)} {self._random.choice(_THINGS)}"
        self.sim.edit_summary(key, summary)
        return f"summary: {summary}"
