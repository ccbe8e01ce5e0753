"""Commands waiting for the one inference worker: bounded, oldest first, with idle work.

A command that finds the queue full is refused at once (the node answers ``queue_full``):
a robot must hear back, and a backlog of old commands is worth less than a prompt refusal.
While no command waits, the worker runs its idle work (starting SAM2 on the newest frame)
each time something it depends on changed (:meth:`CommandQueue.poke`), and sleeps otherwise.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class CommandQueue(Generic[T]):
    """A bounded FIFO for one consumer thread, which can also be woken for idle work."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._poked = True  # the worker looks for idle work once when it starts

    def offer(self, item: T) -> bool:
        """Queue ``item``; False (and nothing queued) when full or closed."""
        with self._changed:
            if self._closed or len(self._items) >= self.maxsize:
                return False
            self._items.append(item)
            self._changed.notify()
            return True

    def poke(self) -> None:
        """Something the idle work depends on changed (a new frame, an encoding done)."""
        with self._changed:
            self._poked = True
            self._changed.notify()

    def take(self, idle: Callable[[], None]) -> T | None:
        """The oldest waiting item, or None once closed and empty. While none waits, runs
        ``idle`` (without the lock) after each :meth:`poke`, and sleeps between them."""
        while True:
            with self._changed:
                while not (self._items or self._closed or self._poked):
                    self._changed.wait()
                if self._items:
                    return self._items.popleft()
                if self._closed:
                    return None
                self._poked = False
            idle()

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
