"""A link shared by concurrent transfers (processor sharing).

Each transfer brings the time it would take alone; ``n`` transfers in flight
each progress at ``1/n`` of the link's rate. Completions are re-planned whenever
a transfer starts or ends.
"""

from __future__ import annotations

from collections.abc import Callable

from frontier_dag.sim.events import EventQueue


class SharedLink:
    def __init__(self, name: str, events: EventQueue):
        self.name = name
        self.events = events
        self._remaining: dict[int, float] = {}  # transfer id -> seconds of work left alone
        self._done: dict[int, Callable[[int], None]] = {}
        self._last = 0.0
        self._version = 0
        self.busy_s = 0.0

    def __len__(self) -> int:
        return len(self._remaining)

    def _advance(self) -> None:
        now = self.events.now
        if self._remaining:
            elapsed = now - self._last
            share = elapsed / len(self._remaining)
            for key in self._remaining:
                self._remaining[key] -= share
            self.busy_s += elapsed
        self._last = now

    def _plan(self) -> None:
        self._version += 1
        if self._remaining:
            key = min(self._remaining, key=lambda k: (self._remaining[k], k))
            delay = max(0.0, self._remaining[key]) * len(self._remaining)
            self.events.after(delay, self._finish, key, self._version)

    def start(self, key: int, alone_s: float, on_done: Callable[[int], None]) -> None:
        """Start transfer ``key`` that would take ``alone_s`` seconds on an idle link."""
        self._advance()
        self._remaining[key] = alone_s
        self._done[key] = on_done
        self._plan()

    def _finish(self, key: int, version: int) -> None:
        if version != self._version:
            return  # superseded by a later plan
        self._advance()
        del self._remaining[key]
        done = self._done.pop(key)
        self._plan()
        done(key)
