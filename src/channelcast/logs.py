"""Log lines that stay readable during an outage. Pure logging; no I/O of its own.

A retry loop that logs every failed attempt writes the same line every second for as
long as the outage lasts. :class:`RepeatFilter`, attached to the logger such a loop
writes through, lets each distinct line through once per window and says, on the next
line it lets through, how many it held back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Hashable

REPEAT_WINDOW_S = 30.0
"""Seconds during which the same line is logged once (the window of :class:`RepeatFilter`
and of the Kafka adapter's skipped-record log)."""


class Repeats:
    """Once per ``window_s`` per key: :meth:`due` says whether to log now, and how many of
    that key it held back since the last time. Thread-safe; it remembers at most 1,000
    keys, then starts afresh."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        self.window_s = window_s
        self._seen: dict[Hashable, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def due(self, key: Hashable) -> int | None:
        """None: held back (counted). Else log now; the int is how many were held back."""
        now = time.monotonic()
        with self._lock:
            first, held = self._seen.get(key, (0.0, -1))
            if held >= 0 and now - first < self.window_s:
                self._seen[key] = (first, held + 1)
                return None
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[key] = (now, 0)
        return max(held, 0)


class RepeatFilter(logging.Filter):
    """Once per ``window_s`` per distinct line; the next one says how many were held back.

    Two lines are the same when their text is equal after removing what ``ignore``
    matches (counters, client names). Thread-safe (Kafka's clients log from their own
    threads), through :class:`Repeats`.
    """

    def __init__(self, window_s: float = REPEAT_WINDOW_S,
                 ignore: re.Pattern[str] | None = None) -> None:
        super().__init__()
        self._ignore = ignore
        self._repeats = Repeats(window_s)

    @property
    def window_s(self) -> float:
        """Seconds during which a line is let through once."""
        return self._repeats.window_s

    @window_s.setter
    def window_s(self, value: float) -> None:
        self._repeats.window_s = value

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        held = self._repeats.due(self._ignore.sub("", text) if self._ignore is not None
                                 else text)
        if held is None:
            return False
        if held:
            record.msg = f"{text} ({held} more like this since it was last logged)"
            record.args = None
        return True
