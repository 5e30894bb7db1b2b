"""A bounded, thread-safe memo of a function of one text: the gateway sees the same texts again
(a conversation's earlier messages on every turn, an agent's tool definitions on every call)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
_MISSING = object()


class TextMemo(Generic[T]):
    """The results of a function of one text for the last `size` texts of up to `max_chars`
    characters; thread-safe. A result of None is remembered too."""

    def __init__(self, size: int = 1024, max_chars: int = 4000) -> None:
        self._size, self._max_chars = size, max_chars
        self._results: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._results.clear()

    def get(self, text: str, compute: Callable[[str], T]) -> T:
        if len(text) > self._max_chars:
            return compute(text)
        with self._lock:
            found = self._results.get(text, _MISSING)
            if found is not _MISSING:
                self._results.move_to_end(text)
                return found  # type: ignore[return-value]
        result = compute(text)
        with self._lock:
            self._results[text] = result
            if len(self._results) > self._size:
                self._results.popitem(last=False)
        return result
