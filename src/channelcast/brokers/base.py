"""The broker contract every backend implements (memory, kafka).

Two ways to consume:

* **Fan-out** (:meth:`Broker.subscribe`): every subscribing process gets every message of
  its channels. No consumer group; a subscription reads the partitions its channels live
  in, from the end (default) or from given positions, and filters by channel.
* **Workers** (:meth:`Broker.worker`): competing consumers in a group, at-least-once,
  manual commit after the handler succeeded, retries with backoff, then a dead-letter topic.

Queues are bounded, and a slow subscription never delays anyone else. A subscription
whose queue is full *falls behind*: live delivery to it stops (nothing waits for it:
not the publishers, not the other subscriptions, not the shared Kafka consumer) and, once
its reader has emptied the queue, it catches up by reading the missed records from the
log itself, then goes live again. Nothing is dropped silently: if the log no longer holds
what it missed (retention, the memory broker's bounded history), iteration raises
HistoryUnavailable. Dropping for slow *clients* is the gateway's policy, not the broker's.

Internal records (the gateway's presence bookkeeping, marked by the ``channelcast.internal``
header) reach only subscriptions and history reads that ask for them
(``include_internal=True``); workers never see them.

This module holds types, protocols and the retry loop every backend's workers share;
no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fnmatch
import inspect
import logging
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from channelcast.channels import validate_channel, validate_pattern
from channelcast.errors import InvalidChannel, InvalidPosition, InvalidWorker
from channelcast.message import Envelope, Record
from channelcast.strategies.base import TopicStrategy
from channelcast.types import ChannelName, JSONValue, Position

log = logging.getLogger(__name__)

Handler = Callable[[Record], Awaitable[None]] | Callable[[Record], None]
"""A worker callback: an ``async def`` function (or any callable returning an awaitable),
or a plain function, which runs in a daemon thread of its own so it cannot block the
event loop nor, if it never returns, keep the process alive (see :func:`as_async`).
Raising means failure: the message is retried, then dead-lettered."""

DEFAULT_SUBSCRIPTION_QUEUE = 10_000

# Headers every backend sets on a stored message (Kafka headers; memory keeps them too).
HEADER_CHANNEL = "channel"
HEADER_EVENT = "event"
HEADER_ID = "id"
HEADER_INTERNAL = "channelcast.internal"
"""Present (value ``1``) on channelcast's own bookkeeping records (envelope type
``internal``): consumer APIs leave them out unless asked for."""
# Dead-letter headers.
HEADER_DLQ_ERROR = "dlq.error"
HEADER_DLQ_ATTEMPTS = "dlq.attempts"
HEADER_DLQ_TOPIC = "dlq.topic"
HEADER_DLQ_PARTITION = "dlq.partition"
HEADER_DLQ_OFFSET = "dlq.offset"


AsyncHandler = Callable[[Record], Awaitable[None]]


def as_async(handler: Handler) -> AsyncHandler:
    """``handler`` as an async callable: an async one as is; a plain function runs in a
    thread of its own per call (a daemon thread, in the caller's context variables), and
    an awaitable it returns is awaited.

    Why not ``asyncio.to_thread``: its executor's threads are joined when ``asyncio.run``
    ends and at interpreter exit, so one plain handler that never returns (a hung network
    call) would keep the process alive after its worker was stopped. A daemon thread is
    left behind instead, with a WARNING naming the handler when its call is cancelled
    while still running. Cost: a thread start per message, 99-115 µs a call against
    79-101 µs with ``asyncio.to_thread`` (3 runs of 3,000 calls each, 2026-11-30, on the
    project's loaded 2-core machine); handlers that need throughput should be ``async def``."""
    call = type(handler).__call__  # an object whose __call__ is async
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call):
        return handler  # type: ignore[return-value]
    name = getattr(handler, "__qualname__", repr(handler))

    async def in_thread(record: Record) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[object] = loop.create_future()
        context = contextvars.copy_context()

        def body() -> None:
            try:
                result = context.run(handler, record)
            except BaseException as exc:  # handed to the awaiting task, which re-raises
                _settle_threadsafe(loop, done, None, exc)
            else:
                _settle_threadsafe(loop, done, result, None)

        thread = threading.Thread(target=body, name=f"channelcast-handler-{name}",
                                  daemon=True)
        thread.start()
        try:
            result = await done
        except asyncio.CancelledError:
            if thread.is_alive():
                log.warning("handler %s was still running when its call was cancelled "
                            "(the worker stopped or gave up the partition): its thread is "
                            "left to finish on its own and does not keep the process "
                            "alive", name)
            raise
        if inspect.isawaitable(result):
            await result

    in_thread.__qualname__ = name
    return in_thread


def _settle_threadsafe(loop: asyncio.AbstractEventLoop, done: asyncio.Future[object],
                       result: object, error: BaseException | None) -> None:
    """From a handler thread: settle ``done`` on its loop, unless the loop has closed
    (the process is shutting down and nobody awaits it any more)."""
    def settle() -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)
    with contextlib.suppress(RuntimeError):  # the loop has closed
        loop.call_soon_threadsafe(settle)


def subscribed_channels(channels: Iterable[str]) -> frozenset[ChannelName]:
    """The channels of a subscribe call, validated. Raises InvalidChannel for a bad name,
    and for a single str (a str is iterable: ``subscribe("user.1")`` would otherwise
    subscribe to the channels ``u``, ``s``... or fail on ``.``)."""
    if isinstance(channels, str | bytes):
        raise InvalidChannel(f"channels must be a list of channel names, not a single "
                             f"{type(channels).__name__} ({channels[:60]!r}): "
                             "subscribe([name])")
    return frozenset(validate_channel(c) for c in channels)


def check_since(channels: frozenset[ChannelName],
                since: Mapping[str, Position] | Mapping[ChannelName, Position] | None
                ) -> dict[ChannelName, Position]:
    """A subscription's ``since`` (channel -> the position to resume after), checked:
    every key one of the subscribed ``channels``, every value a :class:`Position`.
    Raises InvalidChannel for a bad name, InvalidPosition otherwise (a position for a
    channel not subscribed would deliver that channel's backlog to a subscription that
    never asked for it)."""
    if since is not None and not isinstance(since, Mapping):
        raise InvalidPosition(f"since must be a mapping of channel -> Position, got "
                              f"{type(since).__name__}")
    out: dict[ChannelName, Position] = {}
    for key, position in (since or {}).items():
        channel = validate_channel(key)
        if channel not in channels:
            raise InvalidPosition(
                f"since names channel {channel!r}, which is not subscribed (the channels: "
                f"{sorted(channels)[:5]})")
        if not isinstance(position, Position):
            raise InvalidPosition(
                f"since[{channel!r}] must be a Position, got {type(position).__name__} "
                f"{position!r:.60} (Position.parse reads 'topic:partition:offset')")
        out[channel] = position
    return out


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: attempt n (1-based) waits ``min(initial * 2**(n-1), maximum)``."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0

    def backoff(self, attempt: int) -> float:
        return float(min(self.initial_backoff_s * (2 ** (attempt - 1)), self.max_backoff_s))


class RetryAbandoned(Exception):
    """The worker stopped (or gave up the partition) while waiting to retry a failed
    message: it is neither handled nor dead-lettered, and not committed."""

    def __init__(self, attempt: int, error: Exception) -> None:
        super().__init__(f"stopped after attempt {attempt}: {error!r}")
        self.attempt = attempt
        self.error = error


async def handle_with_retries(handler: AsyncHandler, record: Record, retry: RetryPolicy,
                              on_failure: Callable[[int, Exception], None], *,
                              stop: asyncio.Event | None = None) -> Exception | None:
    """Run ``handler`` up to ``retry.max_attempts`` times with backoff between attempts.

    Returns None once it succeeded, or the last error when every attempt failed (the caller
    then dead-letters the record). ``on_failure(attempt, error)`` is told of each failure.
    Cancellation is never retried. When ``stop`` is set during a backoff, raises
    RetryAbandoned at once (no more attempts: a stopping worker leaves the message for
    the partition's next owner). Shared by every backend's workers.
    """
    for attempt in range(1, retry.max_attempts + 1):
        try:
            await handler(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            on_failure(attempt, exc)
            if attempt >= retry.max_attempts:
                return exc
            if stop is None:
                await asyncio.sleep(retry.backoff(attempt))
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry.backoff(attempt))
                if stop.is_set():
                    raise RetryAbandoned(attempt, exc) from exc
        else:
            return None
    raise AssertionError("RetryPolicy.max_attempts must be >= 1")


@dataclass(frozen=True, slots=True)
class WorkerStats:
    processed: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    committed: Mapping[tuple[str, int], int] = field(default_factory=dict)


class ChannelRouter:
    """Picks the handler for a record: per-topic callbacks (the legacy "old format") first,
    then the first channel glob that matches. Shared by every backend."""

    def __init__(self, channels: Mapping[str, Handler], topics: Mapping[str, Handler],
                 group: str | None = None) -> None:
        """Raises InvalidWorker for an empty ``group`` (when given), no handler at all, or a
        handler that is not callable, and InvalidChannel for a pattern no channel can
        match (a character outside the channel grammar)."""
        if group is not None and (not isinstance(group, str) or not group.strip()):
            raise InvalidWorker(f"a worker's group must be a non-empty string, got {group!r}")
        if not channels and not topics:
            raise InvalidWorker("a worker needs at least one handler: channels={pattern: "
                                "handler} and/or topics={topic: handler}")
        for where, table in (("channels", channels), ("topics", topics)):
            for name, handler in table.items():
                if not callable(handler):
                    raise InvalidWorker(f"{where}[{name!r}] must be a function (async def, "
                                        f"or a plain one), got {type(handler).__name__}")
        for pattern in channels:
            validate_pattern(pattern)
        self.topics = {t: as_async(h) for t, h in topics.items()}
        self.channels = [(re.compile(fnmatch.translate(p)), as_async(h))
                         for p, h in channels.items()]
        self.patterns = list(channels)

    def matches(self, channel: str) -> bool:
        """Whether one of the channel patterns matches ``channel``."""
        return any(regex.match(channel) for regex, _handler in self.channels)

    def handler_for(self, record: Record) -> AsyncHandler | None:
        handler = self.topics.get(record.position.topic)
        if handler is not None:
            return handler
        for regex, candidate in self.channels:
            if regex.match(record.channel):
                return candidate
        return None


@runtime_checkable
class Subscription(Protocol):
    """Records of some channels, in per-channel order, from a bounded queue.

    Iterate with ``async for``; ``close()`` (or leaving ``async with``) stops it. Iteration
    raises :class:`~channelcast.errors.BrokerError` if delivery failed for good.

    A subscription may become live asynchronously (Kafka assigns partitions in a thread):
    every message published after ``await sub.ready()`` returns reaches it. Entering
    ``async with`` and the first ``__anext__`` both wait for readiness.
    """

    channels: frozenset[ChannelName]

    async def ready(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[Record]: ...

    async def __anext__(self) -> Record: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None: ...


@runtime_checkable
class Worker(Protocol):
    """A member of a consumer group. ``run()`` processes until ``stop()``."""

    group: str

    async def run(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def stats(self) -> WorkerStats: ...


@runtime_checkable
class Broker(Protocol):
    """A message backend. Use as ``async with broker:`` (start, then flush and close)."""

    strategy: TopicStrategy

    async def start(self) -> None:
        """Connect. Raises BrokerUnavailable within the configured timeout, never hangs."""
        ...

    async def close(self) -> None:
        """Flush pending publishes, stop subscriptions and workers, release resources."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    async def publish(self, channel: str, event: str, data: JSONValue, *,
                      id: str | None = None) -> Position:
        """Validate, encode and store one message; returns its position once acknowledged.

        ``id``: the message id (an idempotency key, :func:`~channelcast.message.
        validate_message_id`'s rules, else MessageError); default a new ULID. Raises
        PublishOutcomeUnknown when the message may be stored although no acknowledgement
        came: retry with the same ``id`` (consumers tell copies apart by id); any other
        PublishError means it was not stored.
        """
        ...

    async def publish_many(self, envelopes: Sequence[Envelope]) -> list[Position]:
        """The batch form; each envelope's id is kept (and checked like ``publish``'s
        ``id``). Same order as input. Raises PublishOutcomeUnknown unless no message of
        the batch can have been stored; retry the same envelopes then."""
        ...

    def subscribe(self, channels: Iterable[str], *,
                  since: Mapping[str, Position] | Mapping[ChannelName, Position] | None = None,
                  max_queue: int = DEFAULT_SUBSCRIPTION_QUEUE,
                  include_internal: bool = False) -> Subscription:
        """Fan-out subscription: from the end, or after ``since[channel]`` for listed
        channels. ``max_queue`` bounds the records waiting to be read (see the module
        docstring for what happens when it is full). ``include_internal`` also delivers
        channelcast's internal records of these channels."""
        ...

    async def history(self, channel: str, since: Position, *,
                      include_internal: bool = False) -> list[Record]:
        """The channel's records after ``since`` up to the current end.

        Raises HistoryUnavailable if some of them are gone (retention, bounded history),
        if ``since`` is not in the channel's partition, or if it is of another epoch of
        the log (the topic was recreated; the memory broker was restarted).
        """
        ...

    async def end_position(self, channel: str) -> Position:
        """The position of the newest message in the channel's partition (offset -1 if empty)."""
        ...

    def worker(self, group: str, *, channels: Mapping[str, Handler] | None = None,
               topics: Mapping[str, Handler] | None = None,
               manual_commit: bool | None = None,
               retry: RetryPolicy | None = None,
               dead_letter_topic: str | None = None) -> Worker:
        """A consumer-group member; ``channels`` maps glob patterns to handlers and
        ``topics`` maps topic names to handlers (the legacy one-callback-per-topic API)."""
        ...

    async def ping(self) -> None:
        """Raise BrokerUnavailable if the broker cannot be reached now (for /readyz)."""
        ...
