"""The last few models loaded on one device, each loaded once and shared by threads.

Upscalers, ControlNets and depth networks are loaded on first use and kept while a session uses
them; a few stay so switching back is free, and the oldest go so memory stays bounded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class KeptModels(Generic[T]):
    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, key: str, load: Callable[[], T]) -> T:
        """The model under ``key``, loaded by ``load`` the first time (the least recently used go)."""
        with self._lock:
            if key not in self._items:
                self._items[key] = load()
                while len(self._items) > self.keep:
                    self._items.popitem(last=False)
            self._items.move_to_end(key)
            return self._items[key]
