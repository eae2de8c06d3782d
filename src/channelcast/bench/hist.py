"""Latency bookkeeping for the benchmark: an HdrHistogram and a fixed-rate schedule.

Owns two small pieces that must be right for the numbers to mean anything:

* :class:`LatencyRecorder` keeps latencies in an HdrHistogram (microseconds, 1 us to
  10 minutes, 3 significant digits), so percentiles come from every sample, not an average.
* :class:`FixedRate` says when message *i* was meant to be sent. Latency is measured from
  that intended time, not from when the sender got round to it: a sender stalled by the
  system under test would otherwise stop sampling exactly while things are slow (the
  "coordinated omission" pitfall) and make the tail look better than it is.

Clocks are ``time.monotonic_ns`` throughout (never wall-clock time). No I/O here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 600_000_000  # 10 minutes
SIGNIFICANT_FIGURES = 3


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles in milliseconds; ``count`` samples."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def empty(cls) -> LatencySummary:
        nan = math.nan
        return cls(0, nan, nan, nan, nan, nan, nan)


class LatencyRecorder:
    """Records latencies (nanoseconds in, microsecond resolution kept)."""

    def __init__(self) -> None:
        self.histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
        self.clamped = 0

    def record_ns(self, latency_ns: int) -> None:
        us = max(LOWEST_US, latency_ns // 1000)
        if us > HIGHEST_US:
            self.clamped += 1
            us = HIGHEST_US
        self.histogram.record_value(us)

    @property
    def count(self) -> int:
        return int(self.histogram.get_total_count())

    def percentile_ms(self, percentile: float) -> float:
        if not self.count:
            return math.nan
        return float(self.histogram.get_value_at_percentile(percentile)) / 1000.0

    def summary(self) -> LatencySummary:
        if not self.count:
            return LatencySummary.empty()
        return LatencySummary(
            count=self.count,
            p50_ms=self.percentile_ms(50),
            p95_ms=self.percentile_ms(95),
            p99_ms=self.percentile_ms(99),
            p999_ms=self.percentile_ms(99.9),
            max_ms=float(self.histogram.get_max_value()) / 1000.0,
            mean_ms=float(self.histogram.get_mean_value()) / 1000.0,
        )

    def curve(self, points: int = 60) -> list[tuple[float, float]]:
        """(percentile, ms) pairs from p0 to p99.99, spaced evenly in log(1/(1-p))."""
        if not self.count:
            return []
        out = []
        top = 4.0  # up to 99.99
        for i in range(points + 1):
            pct = 100.0 * (1.0 - 10 ** (-top * i / points))
            out.append((pct, self.percentile_ms(pct)))
        return out

    def merge_encoded(self, encoded: str) -> None:
        """Add a histogram encoded by :meth:`encode` (e.g. from another process)."""
        if encoded:
            self.histogram.decode_and_add(encoded)

    def encode(self) -> str:
        """The histogram in HdrHistogram's portable compressed form (for results.json)."""
        raw = self.histogram.encode()
        return raw.decode() if isinstance(raw, bytes) else str(raw)


@dataclass(frozen=True, slots=True)
class FixedRate:
    """A send schedule: message ``i`` is due at ``start_ns + i / rate`` seconds."""

    rate: float
    start_ns: int

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")

    def intended_ns(self, index: int) -> int:
        return self.start_ns + int(index * 1e9 / self.rate)

    def due(self, now_ns: int) -> int:
        """How many messages should have been sent by ``now_ns`` (indices 0..due-1)."""
        if now_ns < self.start_ns:
            return 0
        return int((now_ns - self.start_ns) * self.rate / 1e9) + 1
