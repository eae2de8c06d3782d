"""The benchmark's settings and results: plain frozen/mutable dataclasses, no I/O.

Results are serialised to ``results.json`` with :func:`to_jsonable`, and the report and
plot are drawn from them, so a stored run can be re-rendered without re-running it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from channelcast.bench.hist import LatencySummary

SCENARIOS = ("strategies", "overhead", "ceiling", "fanout", "filter", "latency")
"""Scenario names, in the order they run."""

PEER_SCENARIOS = ("peers-fanout", "peers-publish", "peers-kafka-browser")
"""The peers comparison's scenarios (``channelcast bench --peers``), in the order they run."""


def _run_id() -> str:
    return uuid.uuid4().hex[:8]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to run and how big. :meth:`quick` is the test-suite size (well under 2 min)."""

    channels: int = 1000
    messages: int = 100_000
    rates: tuple[float, ...] = (1_000.0, 10_000.0)
    rate_seconds: float = 10.0
    saturation_fraction: float = 0.2
    message_bytes: int = 256
    batch: int = 500
    window: int = 8
    publishers: int = 1000
    overhead_channels: int = 100
    overhead_partitions: int = 10
    overhead_rounds: int = 3
    """Alternating rounds of the raw and channelcast publish loops; the median is reported."""
    java_records: int = 500_000
    fanout_clients: int = 1000
    fanout_messages: int = 50
    fanout_burst: int = 200
    fanout_rate: float = 5.0
    filter_records: int = 1_000_000
    """Records the ``filter`` scenario writes to its one partition (rounded up to one per
    channel in turn, first and last of the subscribed channel)."""
    filter_channels: int = 100
    """Busy channels sharing the ``filter`` scenario's partition with the subscribed one."""
    browser_clients: int = 100
    """WebSocket clients of the peers' Kafka-to-browser scenario."""
    browser_rate: float = 100.0
    """Records per second (for ``rate_seconds``) in the peers' Kafka-to-browser scenario."""
    drain_s: float = 60.0
    scenarios: tuple[str, ...] = SCENARIOS
    run_id: str = field(default_factory=_run_id)
    producer: Mapping[str, Any] = field(default_factory=dict)
    """librdkafka producer settings merged over channelcast's defaults, for channelcast's
    publisher and every raw baseline alike (the comparisons stay like for like)."""
    consumer: Mapping[str, Any] = field(default_factory=dict)
    """librdkafka consumer settings, likewise for channelcast's subscriber and the raw
    consumers."""
    warm_up_s: float = 0.0
    """Seconds of untimed raw load on a throwaway topic before the scenarios. A broker JVM
    started a moment ago runs its produce and fetch paths interpreted until the JIT has
    compiled them, which slows whichever scenario comes first (``scripts/bench``, which
    starts a broker for the run, warms it up for 15 s unless told otherwise)."""
    repeat: int = 1
    """How many times the strategies, filter and latency scenarios run (the strategies
    with their raw round trips). A 10-second run's p99 can be one stall; with repeats the report
    lists every run's target ratios and judges those targets on their median."""

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        values: dict[str, Any] = dict(
            channels=50, messages=5_000, rates=(500.0, 2_000.0), rate_seconds=2.0,
            overhead_channels=10, overhead_partitions=3, overhead_rounds=1,
            java_records=20_000,
            fanout_clients=20, fanout_messages=20, fanout_burst=20, fanout_rate=20.0, drain_s=20.0,
            publishers=200, browser_clients=10, browser_rate=50.0, filter_records=20_000)
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        from channelcast.errors import ConfigError

        unknown = set(self.scenarios) - set(SCENARIOS) - set(PEER_SCENARIOS)
        if unknown:
            raise ConfigError("bench.scenarios", f"unknown scenario(s) {sorted(unknown)}; "
                              f"known: {', '.join(SCENARIOS + PEER_SCENARIOS)}")
        for name in ("channels", "messages", "message_bytes", "batch", "window", "publishers",
                     "repeat",
                     "overhead_channels", "overhead_partitions", "overhead_rounds", "java_records",
                     "fanout_clients", "fanout_messages", "fanout_burst", "browser_clients",
                     "filter_records", "filter_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"bench.{name}", f"must be >= 1, got {getattr(self, name)}")
        if any(not r > 0 for r in self.rates):
            raise ConfigError("bench.rates", f"rates must be > 0, got {self.rates}")
        if not 0 < self.saturation_fraction <= 1:
            raise ConfigError("bench.saturation_fraction", "must be in (0, 1]")
        if not self.warm_up_s >= 0:
            raise ConfigError("bench.warm_up_s", f"must be >= 0 seconds, got {self.warm_up_s}")
        if (self.rate_seconds <= 0 or self.drain_s <= 0 or self.fanout_rate <= 0
                or self.browser_rate <= 0):
            raise ConfigError("bench", "rate_seconds, drain_s, fanout_rate and browser_rate "
                                       "must be > 0")


@dataclass(slots=True)
class LatencyRun:
    """One latency measurement: an offered load (None = as fast as possible)."""

    label: str
    offered_rate: float | None
    sent: int
    received: int
    seconds: float
    latency: LatencySummary
    curve: list[tuple[float, float]] = field(default_factory=list)
    histogram: str = ""
    worst_at_s: float = math.nan
    """When the slowest message was meant to be sent, seconds into the run: tells a single
    stall (which alone can be a 10-second run's p99) from a slow run."""
    gc_max_ms: float = math.nan
    """The longest garbage-collector pause of the benchmark process during the run."""
    gc_total_ms: float = math.nan

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else math.nan

    @property
    def lost(self) -> int:
        return self.sent - self.received


@dataclass(slots=True)
class StrategyResult:
    strategy: str
    channels: int
    topics: int
    partitions: int
    provision_seconds: float
    publish_messages: int = 0
    publish_seconds: float = math.nan
    runs: list[LatencyRun] = field(default_factory=list)
    raw_publish_messages: int = 0
    raw_publish_seconds: float = math.nan
    raw_round_trip: LatencyRun | None = None
    """A bare confluent-kafka produce-to-consume loop on this strategy's own topics and
    partitions, at the rate of its "fraction of saturation" run (Kafka only)."""
    raw_round_trip_note: str = ""
    """What the raw round trip shared with channelcast's run (settings, size, partitions)."""

    @property
    def publish_rate(self) -> float:
        if not self.publish_messages or not self.publish_seconds > 0:
            return math.nan
        return self.publish_messages / self.publish_seconds

    @property
    def raw_publish_rate(self) -> float:
        """The raw produce() loop on the same topics and messages (Kafka only)."""
        if not self.raw_publish_messages or not self.raw_publish_seconds > 0:
            return math.nan
        return self.raw_publish_messages / self.raw_publish_seconds


@dataclass(slots=True)
class ThroughputRow:
    """A throughput figure: ``name`` says what loop, ``group`` which comparison it is in."""

    group: str
    name: str
    messages: int
    seconds: float
    note: str = ""
    latency: LatencySummary | None = None

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else math.nan


READ_GATEWAY = "channelcast gateway node"
READ_FILTER = "raw consumer filtering by channel header"
READ_COUNT = "raw consumer counting"
"""The ``filter`` scenario's readers (:class:`ReadRun.reader`)."""


@dataclass(slots=True)
class ReadRun:
    """One reader's drain of the ``filter`` scenario's pre-filled partition range."""

    reader: str
    run: int
    """Which repeat (1-based)."""
    records: int
    """Records of the partition read between the first and the last timed one."""
    seconds: float
    cpu_seconds: float
    """The reader process's CPU time (every thread) over the same span."""
    matched: int
    """Records of the subscribed channel it delivered or took (all, when counting)."""
    load: str = ""
    """The machine's load average when it started."""

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else math.nan

    @property
    def cpu_us_per_record(self) -> float:
        return self.cpu_seconds / self.records * 1e6 if self.records else math.nan


@dataclass(slots=True)
class ProcessLatency:
    """One run of the ``latency`` scenario: publisher and subscriber in processes of their
    own, channelcast and the raw round trip at the same rate over the same partitions."""

    run: int
    """Which repeat (1-based)."""
    partitions: int
    saturation: LatencyRun
    """channelcast's ``publish_many`` at saturation, the subscriber process reading."""
    channelcast: LatencyRun
    """channelcast at ``saturation_fraction`` of that rate."""
    raw: LatencyRun
    """The raw producer and consumer processes at the same rate."""
    load: str = ""
    """The machine's load average before the run."""
    order: str = ""
    """Which of the two fixed-rate runs went first."""

    @property
    def p99_ratio(self) -> float:
        mine, base = self.channelcast.latency.p99_ms, self.raw.latency.p99_ms
        if not self.channelcast.latency.count or not self.raw.latency.count or not base > 0:
            return math.nan
        return mine / base


@dataclass(slots=True)
class BenchResults:
    config: BenchConfig
    broker: str
    machine: dict[str, str] = field(default_factory=dict)
    strategies: list[StrategyResult] = field(default_factory=list)
    repeats: list[list[StrategyResult]] = field(default_factory=list)
    """The strategies scenario's further runs (``config.repeat`` - 1), in order."""
    throughput: list[ThroughputRow] = field(default_factory=list)
    round_trips: list[LatencyRun] = field(default_factory=list)
    fanout: list[ThroughputRow] = field(default_factory=list)
    reads: list[ReadRun] = field(default_factory=list)
    """The ``filter`` scenario: every reader's every run."""
    process_latency: list[ProcessLatency] = field(default_factory=list)
    """The ``latency`` scenario: every run."""
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    started: str = ""
    seconds: float = 0.0

    def strategy(self, name: str) -> StrategyResult | None:
        return next((s for s in self.strategies if s.strategy == name), None)

    def row(self, group: str, name: str) -> ThroughputRow | None:
        return next((r for r in self.throughput + self.fanout
                     if r.group == group and r.name == name), None)


def to_jsonable(value: Any) -> Any:
    """Dataclasses -> dicts (with derived rates), NaN -> None; for results.json."""
    if is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_jsonable(getattr(value, f.name)) for f in fields(value)}
        for derived in ("publish_rate", "raw_publish_rate", "rate", "achieved_rate", "lost",
                        "cpu_us_per_record", "p99_ratio"):
            if hasattr(value, derived):
                out[derived] = to_jsonable(getattr(value, derived))
        return out
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value
