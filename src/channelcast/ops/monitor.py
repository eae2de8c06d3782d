"""Monitoring figures: per-partition counts and skew, hot channels, consumer-group lag.

:func:`collect` takes one :class:`Snapshot` (reads only). The same snapshot renders as the
``--json`` document (schema ``channelcast.monitor/2``, documented in docs/operations.md),
as Prometheus text exposition, or as the CLI's live table, so the three never disagree.

* Counts come from the watermarks: ``messages = high - low`` (what the partition holds).
* Skew per topic: ``max / mean`` of the partition counts and the coefficient of variation
  (population standard deviation / mean). A partition holding more than ``threshold`` times
  the mean is *overloaded* and produces a warning.
* Hot channels: ranked by their messages in one time window, the last ``window_s``
  seconds, the same for every partition. Each partition's messages in the window are
  counted exactly (the offset of the window's start, found by timestamp, to the high
  watermark); the newest ``sample`` of them are read to see which channel wrote them.
  Where a partition holds more in the window than was read, each channel's count in the
  sample is scaled to the partition's count (``estimated``). A channel's rate is its
  messages in the window over the window's length. (Ranking by each partition's own
  newest messages instead let a channel with 1,500 messages outrank one with 4,000.)
* Lag per group and partition: ``high - committed`` (``high - low`` when nothing is
  committed for that partition). A group asked for by name that has committed nothing
  on the watched topics (an unknown group, or one that never committed) is listed in
  ``groups_without_offsets`` rather than left out silently.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from channelcast.brokers.base import HEADER_CHANNEL
from channelcast.errors import ChannelcastError, ConfigError
from channelcast.ingest import is_channel_name
from channelcast.strategies import create_strategy

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from channelcast.brokers.kafka.admin import KafkaAdmin
    from channelcast.config import Settings

SCHEMA = "channelcast.monitor/2"
MIN_MESSAGES_FOR_WARNING = 100
"""Below this many messages in a topic, uneven partitions are noise, not load."""
DEFAULT_SAMPLE = 1000
"""Newest messages read per partition to attribute a window's messages to channels."""
DEFAULT_WINDOW_S = 60.0
"""Seconds of the hot-channel window (ending at the snapshot)."""


@dataclass(frozen=True, slots=True)
class PartitionStats:
    partition: int
    low: int
    high: int
    messages: int
    share: float
    overloaded: bool


@dataclass(frozen=True, slots=True)
class TopicStats:
    topic: str
    partitions: tuple[PartitionStats, ...]
    messages: int
    mean: float
    max: int
    skew: float
    cv: float


@dataclass(frozen=True, slots=True)
class HotChannel:
    """One channel's share of the hot window: ``messages`` in the window (scaled from
    the ``sampled`` ones read when ``estimated``), ``rate`` = messages / window seconds."""

    channel: str
    topic: str
    partition: int
    rate: float
    sampled: int
    messages: int = 0
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class HotWindow:
    """The window hot channels are ranked in: ``[from_ms, to_ms]`` (Unix ms), with the
    messages the watched partitions hold in it and how many of those were read."""

    from_ms: int
    to_ms: int
    seconds: float
    messages: int
    read: int

    @property
    def estimated(self) -> bool:
        return self.read < self.messages


@dataclass(frozen=True, slots=True)
class Lag:
    group: str
    topic: str
    partition: int
    committed: int | None
    high: int
    lag: int


@dataclass(frozen=True, slots=True)
class SkewWarning:
    kind: str
    topic: str
    partition: int
    message: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    generated_at_ms: int
    bootstrap: str
    top: int
    sample: int
    threshold: float
    topics: tuple[TopicStats, ...]
    hot_channels: tuple[HotChannel, ...]
    lag: tuple[Lag, ...]
    warnings: tuple[SkewWarning, ...]
    hot_window: HotWindow
    groups_without_offsets: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document; see docs/operations.md for the schema."""
        w = self.hot_window
        return {
            "schema": SCHEMA,
            "generated_at_ms": self.generated_at_ms,
            "bootstrap": self.bootstrap,
            "settings": {"top": self.top, "sample": self.sample, "window_s": w.seconds,
                         "threshold": self.threshold},
            "hot_window": {"from_ms": w.from_ms, "to_ms": w.to_ms, "seconds": w.seconds,
                           "messages": w.messages, "read": w.read,
                           "estimated": w.estimated},
            "topics": [{
                "topic": t.topic, "partition_count": len(t.partitions),
                "messages": t.messages, "mean": round(t.mean, 3), "max": t.max,
                "skew": round(t.skew, 4), "cv": round(t.cv, 4),
                "partitions": [{"partition": p.partition, "low": p.low, "high": p.high,
                                "messages": p.messages, "share": round(p.share, 4),
                                "overloaded": p.overloaded} for p in t.partitions],
            } for t in self.topics],
            "hot_channels": [{"channel": h.channel, "topic": h.topic, "partition": h.partition,
                              "messages": h.messages, "rate": round(h.rate, 3),
                              "sampled": h.sampled, "estimated": h.estimated}
                             for h in self.hot_channels],
            "lag": [{"group": g.group, "topic": g.topic, "partition": g.partition,
                     "committed": g.committed, "high": g.high, "lag": g.lag}
                    for g in self.lag],
            "warnings": [{"kind": w.kind, "topic": w.topic, "partition": w.partition,
                          "message": w.message} for w in self.warnings],
            "groups_without_offsets": list(self.groups_without_offsets),
        }

    def to_prometheus(self) -> bytes:
        """The same figures as Prometheus text exposition."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry()))

    def registry(self) -> CollectorRegistry:
        """The figures as gauges in a private registry (never the global one)."""
        from prometheus_client import CollectorRegistry, Gauge

        reg = CollectorRegistry()
        Gauge("channelcast_monitor_up", "1 if the last snapshot could be taken",
              registry=reg).set(1)
        tp = ["topic", "partition"]
        messages = Gauge("channelcast_partition_messages",
                         "Messages held by the partition (high - low watermark)", tp,
                         registry=reg)
        high = Gauge("channelcast_partition_high_watermark",
                     "Next offset to be written in the partition", tp, registry=reg)
        share = Gauge("channelcast_partition_share",
                      "The partition's fraction of its topic's messages", tp, registry=reg)
        over = Gauge("channelcast_partition_overloaded",
                     "1 if the partition holds more than threshold x the topic mean", tp,
                     registry=reg)
        t_messages = Gauge("channelcast_topic_messages", "Messages held by the topic",
                           ["topic"], registry=reg)
        skew = Gauge("channelcast_topic_skew_max_mean",
                     "Largest partition count over the mean partition count", ["topic"],
                     registry=reg)
        cv = Gauge("channelcast_topic_skew_cv",
                   "Coefficient of variation of the partition counts", ["topic"], registry=reg)
        hot = Gauge("channelcast_hot_channel_rate",
                    "Messages per second of the top channels over the hot window",
                    ["channel", "topic", "partition"], registry=reg)
        hot_messages = Gauge("channelcast_hot_channel_messages",
                             "Messages of the top channels in the hot window (scaled from "
                             "a sample where a partition held more than was read)",
                             ["channel", "topic", "partition"], registry=reg)
        Gauge("channelcast_monitor_hot_window_seconds",
              "Length of the window hot channels are ranked in", registry=reg
              ).set(self.hot_window.seconds)
        lag = Gauge("channelcast_consumer_lag", "Messages the group has not committed yet",
                    ["group", "topic", "partition"], registry=reg)
        for t in self.topics:
            t_messages.labels(t.topic).set(t.messages)
            skew.labels(t.topic).set(t.skew)
            cv.labels(t.topic).set(t.cv)
            for p in t.partitions:
                labels = (t.topic, str(p.partition))
                messages.labels(*labels).set(p.messages)
                high.labels(*labels).set(p.high)
                share.labels(*labels).set(p.share)
                over.labels(*labels).set(1 if p.overloaded else 0)
        for h in self.hot_channels:
            hot.labels(h.channel, h.topic, str(h.partition)).set(h.rate)
            hot_messages.labels(h.channel, h.topic, str(h.partition)).set(h.messages)
        for g in self.lag:
            lag.labels(g.group, g.topic, str(g.partition)).set(g.lag)
        return reg


NO_CHANNEL = "(no valid channel in header or key)"
"""The hot-channel label of records whose header and key name no valid channel."""


def _text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None


def resolve_topics(admin: KafkaAdmin, settings: Settings | None, names: Sequence[str] = (),
                   prefixes: Sequence[str] = ()) -> list[str]:
    """Explicit names and prefix matches; with neither, the config's topics that exist."""
    if not names and not prefixes:
        if settings is None:
            return []
        wanted = [s.name for s in create_strategy(settings.kafka).topics()]
        return sorted(admin.partitions(wanted))
    existing = admin.list_topics()
    chosen = {n for n in names if n in existing}
    chosen.update(t for t in existing if any(t.startswith(p) for p in prefixes))
    return sorted(chosen)


def topic_stats(topic: str, marks: Iterable[tuple[int, int, int]],
                threshold: float) -> TopicStats:
    """Counts, share, skew and overload of one topic from (partition, low, high) rows."""
    rows = sorted(marks)
    counts = [max(0, hi - lo) for _, lo, hi in rows]
    total = sum(counts)
    mean = total / len(counts) if counts else 0.0
    biggest = max(counts, default=0)
    spread = statistics.pstdev(counts) if len(counts) > 1 else 0.0
    skew = biggest / mean if mean else 0.0
    cv = spread / mean if mean else 0.0
    warn = len(counts) > 1 and total >= MIN_MESSAGES_FOR_WARNING
    parts = tuple(PartitionStats(p, lo, hi, c, c / total if total else 0.0,
                                 warn and c > threshold * mean)
                  for (p, lo, hi), c in zip(rows, counts, strict=True))
    return TopicStats(topic, parts, total, mean, biggest, skew, cv)


def rank_hot_channels(counts: Mapping[tuple[str, str, int], int],
                      in_window: Mapping[tuple[str, int], int],
                      read: Mapping[tuple[str, int], int],
                      window_s: float) -> list[HotChannel]:
    """Hot channels, most messages in the window first.

    ``counts``: (channel, topic, partition) -> messages of the channel among those read;
    ``in_window``: (topic, partition) -> messages the partition holds in the window;
    ``read``: (topic, partition) -> how many of them were read (with or without a
    channel). A partition read only in part has each channel's count scaled by
    ``in_window / read`` (marked ``estimated``).
    """
    hot: list[HotChannel] = []
    for (channel, topic, partition), n in counts.items():
        total, got = in_window[(topic, partition)], read[(topic, partition)]
        estimated = got < total
        messages = round(n * total / got) if estimated else n
        hot.append(HotChannel(channel, topic, partition, messages / window_s, n, messages,
                              estimated))
    hot.sort(key=lambda h: (-h.messages, -h.sampled, h.channel))
    return hot


def collect(admin: KafkaAdmin, topics: Sequence[str], *, groups: Sequence[str] | None = None,
            top: int = 10, sample: int = DEFAULT_SAMPLE, window_s: float = DEFAULT_WINDOW_S,
            threshold: float = 2.0, now_ms: int | None = None) -> Snapshot:
    """One snapshot of the given topics. ``groups=None`` means every group that has
    committed offsets on them; ``[]`` skips lag. Hot channels: the last ``window_s``
    seconds up to ``now_ms``, at most ``sample`` messages read per partition (0: no hot
    channels)."""
    from channelcast.brokers.kafka.reader import read_ranges

    if window_s <= 0:
        raise ConfigError("--window", f"the hot-channel window must be positive, got {window_s}")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    from_ms = now_ms - int(window_s * 1000)
    marks = admin.watermarks(topics)
    by_topic: dict[str, list[tuple[int, int, int]]] = {}
    for w in marks:
        by_topic.setdefault(w.topic, []).append((w.partition, w.low, w.high))
    stats = tuple(topic_stats(t, rows, threshold) for t, rows in sorted(by_topic.items()))

    counts: Counter[tuple[str, str, int]] = Counter()
    in_window: dict[tuple[str, int], int] = {}
    read: Counter[tuple[str, int]] = Counter()
    holding = [w for w in marks if w.high > w.low]
    if sample > 0 and holding:
        starts = admin.offsets_at([(w.topic, w.partition) for w in holding], from_ms)
        ranges: dict[tuple[str, int], tuple[int, int]] = {}
        for w in holding:
            first = starts.get((w.topic, w.partition))
            if first is None:
                continue  # no message that recent
            first = max(first, w.low)
            if first < w.high:
                in_window[(w.topic, w.partition)] = w.high - first
                ranges[(w.topic, w.partition)] = (max(first, w.high - sample), w.high)
        for msg in read_ranges(admin.bootstrap, ranges, timeout_s=admin.timeout_s):
            read[(msg.topic, msg.partition)] += 1
            # A valid channel name from the header, else the key (as consumers read it,
            # short of decoding values); junk is counted under one label, never shown.
            channel = next((c for c in (msg.header(HEADER_CHANNEL), _text(msg.key))
                            if c is not None and is_channel_name(c)), NO_CHANNEL)
            counts[(channel, msg.topic, msg.partition)] += 1
    hot = rank_hot_channels(counts, in_window, read, window_s)
    window = HotWindow(from_ms, now_ms, window_s, sum(in_window.values()), sum(read.values()))

    lag: list[Lag] = []
    without_offsets: list[str] = []
    if groups is None or groups:
        selected = set(topics)
        high = {(w.topic, w.partition): w for w in marks}
        for group in (admin.list_groups() if groups is None else groups):
            committed = admin.group_offsets(group).committed
            touched = {t for (t, _) in committed if t in selected}
            if not touched and groups is not None:
                without_offsets.append(group)
            for (t, p), w in sorted(high.items()):
                if t not in touched:
                    continue
                offset = committed.get((t, p), -1)
                done = offset if offset >= 0 else None
                lag.append(Lag(group, t, p, done, w.high,
                               max(0, w.high - (w.low if done is None else done))))

    warnings = tuple(
        SkewWarning("partition-overloaded", t.topic, p.partition,
                f"{t.topic}[{p.partition}] holds {p.messages} of {t.messages} messages "
                f"({p.share:.0%}; {p.messages / t.mean:.1f}x the mean of {t.mean:.0f})")
        for t in stats for p in t.partitions if p.overloaded)
    return Snapshot(now_ms, admin.bootstrap, top, sample, threshold, stats,
                    tuple(hot[:top]), tuple(lag), warnings, window, tuple(without_offsets))


class _ScrapeCollector:
    """Takes a fresh snapshot on every scrape; a failed one reports monitor_up 0."""

    def __init__(self, take: Callable[[], Snapshot]) -> None:
        self._take = take
        self._lock = threading.Lock()  # one snapshot at a time, even with eager scrapers

    def collect(self) -> Iterator[Metric]:
        from prometheus_client import CollectorRegistry, Gauge

        with self._lock:
            try:
                registry = self._take().registry()
            except ChannelcastError:
                registry = CollectorRegistry()
                Gauge("channelcast_monitor_up", "1 if the last snapshot could be taken",
                      registry=registry).set(0)
        yield from registry.collect()


@dataclass(slots=True)
class MetricsServer:
    """A running ``/metrics`` endpoint; ``close()`` stops it and joins its thread."""

    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve_metrics(take: Callable[[], Snapshot], port: int,
                  host: str = "127.0.0.1") -> MetricsServer:
    """Serve Prometheus metrics on ``host:port`` (0: any free port), one snapshot per scrape."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ScrapeCollector(take))
    server, thread = start_http_server(port, host, registry)
    return MetricsServer(server, thread)
