"""The latency machinery: HdrHistogram percentiles and the fixed-rate schedule."""

from __future__ import annotations

import math

import pytest

from channelcast.bench.hist import HIGHEST_US, FixedRate, LatencyRecorder


def test_percentiles_of_a_known_distribution() -> None:
    rec = LatencyRecorder()
    for ms in range(1, 1001):  # 1..1000 ms, one sample each
        rec.record_ns(ms * 1_000_000)
    s = rec.summary()
    assert s.count == 1000
    # HdrHistogram keeps 3 significant digits: within 0.1% of the exact order statistic.
    assert s.p50_ms == pytest.approx(500, rel=2e-3)
    assert s.p95_ms == pytest.approx(950, rel=2e-3)
    assert s.p99_ms == pytest.approx(990, rel=2e-3)
    assert s.max_ms == pytest.approx(1000, rel=2e-3)
    assert s.mean_ms == pytest.approx(500.5, rel=2e-3)


def test_sub_microsecond_and_huge_values_are_kept_in_range() -> None:
    rec = LatencyRecorder()
    rec.record_ns(10)  # below 1 us: counted as 1 us
    rec.record_ns((HIGHEST_US + 5) * 1000)  # above the range: clamped and counted
    assert rec.count == 2
    assert rec.clamped == 1
    assert rec.summary().max_ms == pytest.approx(HIGHEST_US / 1000, rel=2e-3)


def test_empty_recorder_reports_nan_not_zero() -> None:
    s = LatencyRecorder().summary()
    assert s.count == 0
    assert math.isnan(s.p99_ms)
    assert LatencyRecorder().curve() == []


def test_curve_is_monotonic_and_reaches_the_tail() -> None:
    rec = LatencyRecorder()
    for i in range(10_000):
        rec.record_ns((i % 100 + 1) * 1_000_000)
    curve = rec.curve(points=40)
    pcts = [p for p, _ in curve]
    values = [v for _, v in curve]
    assert pcts[0] == 0.0
    assert pcts[-1] == pytest.approx(99.99)
    assert values == sorted(values)
    assert values[-1] == pytest.approx(100, rel=2e-3)


def test_fixed_rate_intended_times_do_not_depend_on_when_we_send() -> None:
    schedule = FixedRate(rate=1000.0, start_ns=5_000_000_000)
    assert schedule.intended_ns(0) == 5_000_000_000
    assert schedule.intended_ns(1500) == 5_000_000_000 + 1_500_000_000
    assert schedule.due(4_999_999_999) == 0
    assert schedule.due(5_000_000_000) == 1
    # A sender that stalls for 250 ms owes 250 more messages, each stamped with its
    # original slot, so the stall shows up in their latency (coordinated omission).
    assert schedule.due(5_000_000_000 + 250_000_000) == 251
    late = 5_000_000_000 + 250_000_000
    owed = [schedule.intended_ns(i) for i in range(1, 251)]
    assert all(t <= late for t in owed)
    assert late - owed[0] == 249_000_000


def test_fixed_rate_rejects_non_positive_rates() -> None:
    with pytest.raises(ValueError, match="rate must be > 0"):
        FixedRate(rate=0.0, start_ns=0)
