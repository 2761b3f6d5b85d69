"""A tiny, exact event core: a heap of timed callbacks, like SimPy without processes.

Time is in seconds (float). Events at the same time run in the order they were
scheduled, so a run is deterministic.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import count


class EventQueue:
    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable, tuple]] = []
        self._order = count()

    def __len__(self) -> int:
        return len(self._heap)

    def at(self, time: float, callback: Callable, *args) -> None:
        """Run ``callback(*args)`` at ``time`` (never earlier than now)."""
        if time < self.now:
            time = self.now
        heapq.heappush(self._heap, (time, next(self._order), callback, args))

    def after(self, delay: float, callback: Callable, *args) -> None:
        self.at(self.now + delay, callback, *args)

    def step(self) -> bool:
        """Run the next event; False when there is none."""
        if not self._heap:
            return False
        self.now, _, callback, args = heapq.heappop(self._heap)
        callback(*args)
        return True
