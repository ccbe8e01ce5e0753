"""SAM2 image encodings per frame: started early, on their own thread, and kept for reuse.

The encoder needs only the image, so it starts on a worker thread as soon as a request is
prepared and runs while the policy generates. Encodings are kept in a small LRU keyed by a
frame key (the node passes header stamp + frame id; default: a hash of the pixels), so several
commands on one frame encode it once.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .segmenter.base import ImageEncoding, Segmenter


def frame_key_of(image: np.ndarray) -> str:
    """Default frame key: a hash of the pixels and shape (a few ms for a 720p frame)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((image.shape, image.dtype.str)).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


@dataclass
class Encoded:
    encoding: ImageEncoding
    started: float
    seconds: float


class EncodeCache:
    """Futures of encodings by frame key (LRU of ``capacity``; 0 keeps none)."""

    def __init__(
        self,
        segmenter: Segmenter,
        capacity: int,
        *,
        concurrent: bool = True,
    ) -> None:
        self.segmenter = segmenter
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, Future[Encoded]] = OrderedDict()
        self._lock = threading.Lock()
        # Requests that found their frame's encoding kept (done or in flight), and those that
        # had to start one: how often encodings are reused (the node reports them).
        self._hits = 0
        self._misses = 0
        self._executor: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="wise-sam2-encode")
            if concurrent
            else None
        )

    def get(
        self, key: Hashable, image: np.ndarray, *, cache: bool = True
    ) -> tuple[Future[Encoded], bool]:
        """The frame's encoding (cached, in flight, or started now) and whether it was cached."""
        with self._lock:
            cached = self._entries.get(key) if cache else None
            if cached is not None and not (cached.done() and cached.exception() is not None):
                self._entries.move_to_end(key)
                self._hits += 1
                return cached, True
            if cache:
                self._misses += 1
            # The caller may reuse its buffer once segment returns, the worker may not be done.
            pixels = image.copy()
            if self._executor is not None:
                future = self._executor.submit(self._encode, pixels)
            else:
                future = Future()
                try:
                    future.set_result(self._encode(pixels))
                except Exception as exc:
                    future.set_exception(exc)
            if cache and self.capacity > 0:
                self._entries[key] = future
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
            return future, False

    def _encode(self, image: np.ndarray) -> Encoded:
        started = time.perf_counter()
        encoding = self.segmenter.encode(image)
        return Encoded(encoding, started, time.perf_counter() - started)

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def info(self) -> dict[str, int]:
        with self._lock:
            return {
                "size": len(self._entries),
                "capacity": self.capacity,
                "hits": self._hits,
                "misses": self._misses,
            }

    def close(self) -> None:
        """Stop the worker (queued encodings are cancelled) and drop every encoding."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._entries.clear()
