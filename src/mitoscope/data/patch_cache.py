"""An in-memory, byte-bounded LRU cache of decoded patches.

Decoding a PNG or a slide region costs far more than augmenting it, and a training run reads every patch once
per epoch. Each process (each DataLoader worker) holds its own cache: nothing is shared, nothing is locked.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np


class PatchCache:
    """Least-recently-used cache of NumPy arrays bounded by their total size in bytes.

    Args:
        max_bytes: the budget; an array larger than it is never stored. ``0`` disables the cache.

    Examples:
        >>> cache = PatchCache(max_bytes=2 * 64)
        >>> a = cache.get_or_load("a", lambda: np.zeros(64, np.uint8))
        >>> b = cache.get_or_load("b", lambda: np.ones(64, np.uint8))
        >>> _ = cache.get_or_load("c", lambda: np.ones(64, np.uint8))  # evicts "a"
        >>> "a" in cache, "b" in cache, cache.nbytes
        (False, True, 128)
    """

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_megabytes(cls, megabytes: float) -> PatchCache:
        """A cache of ``megabytes`` MiB."""
        return cls(int(megabytes * 2**20))

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> np.ndarray | None:
        """The cached array (marked recently used) or None."""
        arr = self._items.get(key)
        if arr is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return arr

    def put(self, key: Hashable, array: np.ndarray) -> None:
        """Store ``array`` (read-only) under ``key``, evicting the least recently used ones as needed."""
        size = int(array.nbytes)
        if size > self.max_bytes:
            return
        if key in self._items:
            self.nbytes -= int(self._items.pop(key).nbytes)
        while self._items and self.nbytes + size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.nbytes -= int(old.nbytes)
        array = np.asarray(array)
        array.setflags(write=False)
        self._items[key] = array
        self.nbytes += size

    def get_or_load(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array for ``key``, or ``load()`` stored and returned."""
        arr = self.get(key)
        if arr is None:
            arr = load()
            self.put(key, arr)
        return arr

    def clear(self) -> None:
        """Drop everything."""
        self._items.clear()
        self.nbytes = 0
