"""The ``latency`` scenario's report and target (no broker; the scenario itself runs in
test_quick_kafka.py), and the raw halves of the round trip against a missing broker."""

from __future__ import annotations

import json

import pytest

from channelcast.bench import (
    BenchConfig,
    BenchResults,
    LatencyRecorder,
    LatencyRun,
    check_targets,
    render_markdown,
)
from channelcast.bench.model import ProcessLatency

TARGET = ("p99 at 20% of saturation, publisher and subscriber in processes of their own, "
          "<= 1.5x the raw round trip run the same way")


def _run(label: str, rate: float | None, p99_ms: float) -> LatencyRun:
    rec = LatencyRecorder()
    for _ in range(99):
        rec.record_ns(1_000_000)
    rec.record_ns(int(p99_ms * 1_000_000))
    rec.record_ns(int(p99_ms * 1_000_000))
    return LatencyRun(label, rate, 101, 101, 1.0, rec.summary(), rec.curve(), rec.encode())


def _process(run: int, channelcast_p99: float, raw_p99: float) -> ProcessLatency:
    return ProcessLatency(run, 23, _run("saturation", None, 100.0),
                          _run("20% of saturation", 5000.0, channelcast_p99),
                          _run("raw round trip, separate processes", 5000.0, raw_p99),
                          "2.00 2.00 2.00", "channelcast then raw")


def test_the_ratio_is_of_the_p99s_and_nan_without_samples() -> None:
    assert _process(1, 30.0, 20.0).p99_ratio == pytest.approx(1.5, rel=0.01)
    empty = _process(1, 30.0, 20.0)
    empty.raw = LatencyRun("raw", 1.0, 0, 0, 1.0, LatencyRecorder().summary())
    assert empty.p99_ratio != empty.p99_ratio  # NaN: not measured, never 0 or inf


def test_the_target_is_judged_on_the_median_of_the_runs_ratios() -> None:
    results = BenchResults(config=BenchConfig(), broker="kafka://x",
                           process_latency=[_process(1, 40.0, 10.0), _process(2, 12.0, 10.0),
                                            _process(3, 10.0, 10.0)])
    check = {t.name: t for t in check_targets(results)}[TARGET]
    assert check.measured == "1.20x (median of 4.00x, 1.20x, 1.00x)"
    assert check.met is True
    results.process_latency[1] = _process(2, 16.0, 10.0)
    check = {t.name: t for t in check_targets(results)}[TARGET]
    assert check.measured == "1.60x (median of 4.00x, 1.60x, 1.00x)"
    assert check.met is False
    assert {t.name: t for t in check_targets(BenchResults(BenchConfig(), "k"))}[TARGET].met \
        is None


def test_the_report_lists_every_run_and_its_latency_table() -> None:
    results = BenchResults(config=BenchConfig(), broker="kafka://x",
                           process_latency=[_process(1, 40.0, 10.0), _process(2, 12.0, 10.0)])
    text = render_markdown(results)
    assert "## 6. Latency at 20% of saturation, publisher and subscriber in processes" in text
    assert "over the grouped mapping's 23 partitions" in text
    assert ("| 2 | 2.00 | 101 | 5,000 | 1.00 / 12.0 | 1.00 / 10.0 | 1.20x | 101 / 101; "
            "101 / 101 | channelcast then raw |") in text
    assert "| run 2: raw confluent-kafka | raw round trip, separate processes | 5,000 |" in text
    assert f"| {TARGET} | 2.60x (median of 4.00x, 1.20x) | **no** |" in text


def test_a_raw_half_says_what_went_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    from channelcast.bench import nodes

    # Nothing listens on port 1: one error line and exit code 1, never a hang.
    spec = {"bootstrap": "127.0.0.1:1", "run_id": "x", "channels": 10, "expected": 1,
            "timeout_s": 1}
    assert nodes.main(["raw-consumer", json.dumps(spec)]) == 1
    assert capsys.readouterr().out.startswith("error: ")
