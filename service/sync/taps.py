"""A stream's place at the change hub (Tap), and the joined taps indexed by what they follow."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from service.storage.changes import Cursor, Filter, Reach


@dataclass(eq=False)
class Tap:
    """One stream's place at the hub: its filter, where it joined, and what waits to be sent."""

    only: Filter
    after: Cursor
    buffer: int
    frames: list[tuple[Cursor, bytes]] = field(default_factory=list)
    dropped: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, cursor: Cursor, frame: bytes) -> bool:
        """Queue one entry; False when the buffer is full (the stream is then dropped)."""
        if len(self.frames) >= self.buffer:
            return False
        self.frames.append((cursor, frame))
        self.ready.set()
        return True

    def drop(self) -> None:
        self.dropped = True
        self.frames.clear()  # what is not sent yet is read again on resume: free it now
        self.ready.set()

    def take(self) -> list[tuple[Cursor, bytes]]:
        self.ready.clear()
        frames, self.frames = self.frames, []
        return frames


class Taps:
    """The joined taps, indexed by what their filters name, so that an entry meets only the
    taps that may admit it: handing out a page costs what its readers get, not every stream."""

    def __init__(self) -> None:
        self.joined: set[Tap] = set()
        self._everyone: set[Tap] = set()
        self._by_key: dict[str, set[Tap]] = {}
        self._by_project: dict[str, set[Tap]] = {}

    def __bool__(self) -> bool:
        return bool(self.joined)

    def __len__(self) -> int:
        return len(self.joined)

    def add(self, tap: Tap) -> None:
        self.joined.add(tap)
        names = self._names(tap)
        if not names:
            self._everyone.add(tap)
        for index, name in names:
            index.setdefault(name, set()).add(tap)

    def discard(self, tap: Tap) -> None:
        self.joined.discard(tap)
        self._everyone.discard(tap)
        for index, name in self._names(tap):
            held = index.get(name, set())
            held.discard(tap)
            if not held:
                index.pop(name, None)

    def meeting(self, reach: Reach) -> set[Tap]:
        """The taps whose filter may admit an entry of this reach (Filter.admits decides)."""
        found = set(self._everyone)
        for key in reach.keys:
            found |= self._by_key.get(key, set())
        for project in reach.projects:
            found |= self._by_project.get(project, set())
        return found

    def _names(self, tap: Tap) -> list[tuple[dict[str, set[Tap]], str]]:
        # By its keys when it has some (the narrower), else its project; none: everyone's.
        if tap.only.keys is not None:
            return [(self._by_key, key) for key in tap.only.keys]
        if tap.only.project_id is not None:
            return [(self._by_project, tap.only.project_id)]
        return []
