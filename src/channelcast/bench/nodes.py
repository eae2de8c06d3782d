"""The benchmark's own processes: readers and writers that must not share an interpreter
(its GIL, event loop and garbage collector) with what they are compared with, as in a
deployment, where a publisher, a gateway node and a consumer are processes of their own.

Run as ``python -m channelcast.bench.nodes MODE SPEC`` (SPEC: one JSON object), driven by
:mod:`.procs`; the benchmark package never imports this module. On stdout, one line
each: ``ready`` once set up, then the result as one JSON object (or ``error: ...``, exit
code 1, traceback on stderr). Modes that wait for it start their timed part when ``go``
arrives on stdin.

Modes:

* ``gateway-reader``: a gateway node (a :class:`~channelcast.brokers.kafka.broker.
  KafkaBroker` and the gateway's :class:`~channelcast.gateway.hub.Hub`, one listener
  that counts) subscribed to one channel; ``ready`` once a probe of that channel came
  through, so its broker subscription is live. After ``go`` it waits until ``expected``
  messages of the channel were delivered and reports when the first and the last came.
* ``raw-reader``: :func:`channelcast.bench.raw.read_range`.

It never creates or deletes topics (the parent does) and never judges speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from channelcast.errors import BrokerError
from channelcast.types import ChannelName

PROBE_EVENT = "probe"
"""Event of the messages that tell a reader's subscription is live (never counted)."""


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _wait_for_go() -> None:
    line = await asyncio.to_thread(sys.stdin.readline)
    if line.strip() != "go":
        raise BrokerError(f"expected 'go' on stdin, got {line!r}")


def _kafka_settings(spec: Mapping[str, Any]) -> Any:
    """The KafkaSettings a spec names: one topic (``topic``, ``partitions``) for every
    channel, with the run's librdkafka overrides."""
    from channelcast.config import KafkaSettings

    return KafkaSettings(brokers=spec["bootstrap"], topic_strategy="grouped",
                         default_topic=spec["topic"],
                         default_partitions=int(spec.get("partitions", 1)),
                         timeout_s=60.0, producer=dict(spec.get("producer", {})),
                         consumer=dict(spec.get("consumer", {})))


class _CountingListener:
    """A gateway listener (the Hub's Listener protocol) that only counts deliveries."""

    connection_id = "bench-reader"

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.first_ns = self.last_ns = 0
        self.cpu_first = self.cpu_last = 0.0
        self.probe_seen = asyncio.Event()
        self.done = asyncio.Event()
        self.lost: str | None = None

    def attached(self, channel: ChannelName, result: Any) -> None:
        return None

    def deliver(self, channel: ChannelName, record: Any, text: str) -> None:
        if record.event == PROBE_EVENT:
            self.probe_seen.set()
            return
        now = time.monotonic_ns()
        if not self.received:
            self.first_ns, self.cpu_first = now, time.process_time()
        self.received += 1
        if self.received >= self.expected:
            self.last_ns, self.cpu_last = now, time.process_time()
            self.done.set()

    def presence_changed(self, channel: ChannelName, diff: Any) -> None:
        return None

    def subscription_lost(self, channel: ChannelName, reason: str) -> None:
        self.lost = reason
        self.done.set()


async def _until_done(done: asyncio.Event, progress: Callable[[], int],
                      drain_s: float) -> None:
    """Wait for ``done``, giving up after ``drain_s`` seconds without progress."""
    last = -1
    while not done.is_set():
        now = progress()
        if now == last:
            return
        last = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), drain_s)


async def gateway_reader(spec: Mapping[str, Any]) -> dict[str, Any]:
    from channelcast.brokers.kafka.broker import KafkaBroker
    from channelcast.gateway.hub import Hub
    from channelcast.message import Envelope
    from channelcast.runtime import freeze_startup_heap

    channel = ChannelName(spec["channel"])
    listener = _CountingListener(int(spec["expected"]))
    async with KafkaBroker(_kafka_settings(spec)) as broker, Hub(broker) as hub:
        await hub.attach(channel, listener)
        # Once a probe published now has come through, the feed's broker subscription is
        # registered with the fan-out consumer (live), whichever way it arrived.
        deadline = time.monotonic() + 60.0
        while not listener.probe_seen.is_set():
            if time.monotonic() > deadline:
                raise BrokerError("the gateway node never saw its probe")
            await broker.publish_many([Envelope(channel, PROBE_EVENT, None)])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.probe_seen.wait(), 1.0)
        freeze_startup_heap()  # as `channelcast serve` does
        _say("ready")
        await _wait_for_go()
        await _until_done(listener.done, lambda: listener.received,
                          float(spec.get("drain_s", 30.0)))
    if listener.lost is not None:
        raise BrokerError(f"the gateway node lost its subscription: {listener.lost}")
    return {"received": listener.received, "first_ns": listener.first_ns,
            "last_ns": listener.last_ns,
            "cpu_seconds": listener.cpu_last - listener.cpu_first,
            "skipped": broker.skipped_records}


def raw_reader(spec: Mapping[str, Any]) -> dict[str, Any]:
    from channelcast.bench import raw
    from channelcast.brokers.kafka.client import private_consumer_config

    # The fan-out consumer's own librdkafka settings (the run's overrides included).
    config = private_consumer_config(_kafka_settings(spec), "bench-reader")
    channel = spec.get("channel")
    _say("ready")
    read = raw.read_range(spec["bootstrap"], spec["topic"], int(spec.get("partition", 0)),
                          int(spec["start"]), int(spec["count"]),
                          channel=channel.encode() if channel is not None else None,
                          config=config, timeout_s=float(spec.get("timeout_s", 300.0)))
    return {"records": read.records, "seconds": read.seconds,
            "cpu_seconds": read.cpu_seconds, "matched": read.matched}


_MODES: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "gateway-reader": lambda spec: asyncio.run(gateway_reader(spec)),
    "raw-reader": raw_reader,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in _MODES:
        _say(f"error: usage: python -m channelcast.bench.nodes {{{','.join(_MODES)}}} SPEC")
        return 2
    try:
        result = _MODES[args[0]](json.loads(args[1]))
    except Exception as exc:
        _say(f"error: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1
    _say(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
