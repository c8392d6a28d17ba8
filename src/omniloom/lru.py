"""A thread-safe LRU map bounded by a total weight, with single-flight computation.

The encoder cache (projected embeddings, weighed in bytes) and the perception cascade's memory
(OCR lines and labels per image, one each) are both this. ``get_or_compute`` runs the work for a
key once even when several threads miss on it together: the others wait for that result.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

V = TypeVar("V")


def one(_value: object) -> int:
    return 1


class LRU(Generic[V]):
    def __init__(self, capacity: int, weigh: Callable[[V], int] = one):
        self.capacity, self.weigh = capacity, weigh
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._pending: dict[Hashable, Future[V]] = {}
        self._weight = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            return self._lookup(key)

    def _lookup(self, key: Hashable) -> V | None:
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, value: V) -> None:
        """Stores ``value`` as the newest entry; one heavier than the whole capacity is dropped."""
        weight = self.weigh(value)
        if weight > self.capacity:
            return
        with self._lock:
            if key in self._entries:
                self._weight -= self.weigh(self._entries.pop(key))
            self._entries[key] = value
            self._weight += weight
            while self._weight > self.capacity:
                _, evicted = self._entries.popitem(last=False)
                self._weight -= self.weigh(evicted)

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The cached value, or ``compute()``'s, stored. Concurrent callers on the same missing
        key share one computation (and its exception, if it raises)."""
        with self._lock:
            if (value := self._lookup(key)) is not None:
                return value
            pending = self._pending.get(key)
            if pending is None:
                self._pending[key] = future = Future()
        if pending is not None:
            return pending.result()
        try:
            value = compute()
        except BaseException as error:
            self._settle(key)
            future.set_exception(error)
            raise
        self.put(key, value)
        self._settle(key)
        future.set_result(value)
        return value

    def _settle(self, key: Hashable) -> None:
        with self._lock:
            del self._pending[key]

    @property
    def weight(self) -> int:
        return self._weight

    def __len__(self) -> int:
        return len(self._entries)
