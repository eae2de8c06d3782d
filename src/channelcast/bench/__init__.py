"""``channelcast bench``: measure what the original only claimed.

Library functions the CLI and the tests call: :func:`run_bench` (all scenarios, one
process, one broker), :func:`bench` (plus output folder and an optional private Kafka),
:class:`BenchConfig` (:meth:`BenchConfig.quick` for the test suite). Scenarios live in
:mod:`.scenarios`, histograms and fixed-rate schedules in :mod:`.hist`, files in
:mod:`.report`. It never asserts speed; it measures and reports.
"""

from __future__ import annotations

from channelcast.bench.hist import FixedRate, LatencyRecorder, LatencySummary
from channelcast.bench.model import (
    SCENARIOS,
    BenchConfig,
    BenchResults,
    LatencyRun,
    StrategyResult,
    ThroughputRow,
)
from channelcast.bench.report import check_targets, render_markdown, write_outputs
from channelcast.bench.runner import DEFAULT_OUTPUT, bench, run_bench
from channelcast.bench.targets import KafkaTarget, MemoryTarget, PrivateCluster

__all__ = [
    "DEFAULT_OUTPUT",
    "SCENARIOS",
    "BenchConfig",
    "BenchResults",
    "FixedRate",
    "KafkaTarget",
    "LatencyRecorder",
    "LatencyRun",
    "LatencySummary",
    "MemoryTarget",
    "PrivateCluster",
    "StrategyResult",
    "ThroughputRow",
    "bench",
    "check_targets",
    "render_markdown",
    "run_bench",
    "write_outputs",
]
