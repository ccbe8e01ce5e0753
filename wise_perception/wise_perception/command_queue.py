"""Commands waiting for the one inference worker: bounded, oldest first.

A command that finds the queue full is refused at once (the node answers ``queue_full``):
a robot must hear back, and a backlog of old commands is worth less than a prompt refusal.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class CommandQueue(Generic[T]):
    """A bounded FIFO for one consumer thread."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._changed = threading.Condition()
        self._closed = False

    def offer(self, item: T) -> bool:
        """Queue ``item``; False (and nothing queued) when full or closed."""
        with self._changed:
            if self._closed or len(self._items) >= self.maxsize:
                return False
            self._items.append(item)
            self._changed.notify()
            return True

    def take(self) -> T | None:
        """The oldest waiting item, or None once closed and empty; waits for one."""
        with self._changed:
            while not (self._items or self._closed):
                self._changed.wait()
            return self._items.popleft() if self._items else None

    def close(self, *, drop_waiting: bool = False) -> list[T]:
        """No more items are taken in; the worker ends once the waiting ones are served
        (``drop_waiting``: at once). Returns the dropped items."""
        with self._changed:
            self._closed = True
            dropped = list(self._items) if drop_waiting else []
            if drop_waiting:
                self._items.clear()
            self._changed.notify_all()
            return dropped

    def __len__(self) -> int:
        with self._changed:
            return len(self._items)
