"""Idempotent signed publishes: a repeated signed request gets the first one's answer.

Owns the bounded memory of signed publish requests seen inside the replay window, keyed
by signature: the answer of each one that succeeded, and a future for each one still in
flight. :meth:`AnswerMemory.once` runs a request's work at most once at a time per
signature: an identical request arriving while the first runs waits for its answer; one
arriving after it succeeded gets the same answer without running anything; one arriving
after it failed (any error) runs again.

Bounds: at most ``max_requests`` requests and ``max_bytes`` bytes of answers; the oldest
are forgotten first, and so are requests whose timestamp left the window (they would be
refused as stale anyway). A forgotten request that comes again runs again: the HTTP API
gives its messages ids derived from the signature (:meth:`.auth.SignedRequest.message_id`),
so even then the copies carry the same ids, as they do across nodes.

It never checks a signature (:mod:`.auth` does) and never publishes: it is handed the
work as a callable. No I/O, no tasks of its own: the work runs in the caller's task.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

DEFAULT_MAX_REQUESTS = 100_000
DEFAULT_MAX_BYTES = 32 * 1024 * 1024


class _AttemptFailed(Exception):
    """What waiters of a failed attempt see: they then try themselves."""


@dataclass(slots=True)
class _Entry:
    timestamp: int
    answer: asyncio.Future[bytes]
    size: int = 0


class AnswerMemory:
    """Answers of recent requests by key (the request's signature). Not thread-safe: one
    event loop."""

    def __init__(self, window_s: float, *, max_requests: int = DEFAULT_MAX_REQUESTS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.window_s = window_s
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def remembered_bytes(self) -> int:
        """Bytes of answers held now (at most ``max_bytes``)."""
        return self._bytes

    async def once(self, key: str, timestamp: int, run: Callable[[], Awaitable[bytes]],
                   now: float) -> bytes:
        """The answer for request ``key`` (sent at ``timestamp``, Unix seconds): the
        remembered one, the one of the identical request in flight, or ``run()``'s.

        Whatever ``run()`` raises is raised here, and the request is then forgotten, so
        a retry runs again; waiters of that attempt try again themselves (one of them
        runs, the others wait for it). A waiter that is cancelled leaves the attempt it
        waits for running.
        """
        while True:
            entry = self._entries.get(key)
            if entry is None:
                break
            try:
                return await asyncio.shield(entry.answer)
            except _AttemptFailed:
                continue  # that attempt failed: run it ourselves, or wait for who does
        self._forget(now, room=1)
        entry = _Entry(timestamp, asyncio.get_running_loop().create_future())
        self._entries[key] = entry
        try:
            answer = await run()
        except BaseException:
            if self._entries.get(key) is entry:
                del self._entries[key]
            entry.answer.set_exception(_AttemptFailed())
            entry.answer.exception()  # retrieved: nobody waiting is not an error
            raise
        entry.answer.set_result(answer)
        if self._entries.get(key) is entry:  # not forgotten meanwhile
            entry.size = len(answer)
            self._bytes += entry.size
            self._forget(now, room=0)
        return answer

    def _forget(self, now: float, room: int) -> None:
        """Drop the oldest entries while one is out of the window or a bound is
        exceeded; ``room``: requests about to be added."""
        entries = self._entries
        while entries:
            key, oldest = next(iter(entries.items()))
            if (abs(now - oldest.timestamp) <= self.window_s
                    and len(entries) + room <= self.max_requests
                    and self._bytes <= self.max_bytes):
                break
            del entries[key]
            self._bytes -= oldest.size
