"""``channelcast bench``: measure what the original only claimed.

A package of its own, installed with the ``bench`` extra (``channelcast[bench]``:
hdrhistogram, matplotlib); importing it without them raises MissingDependency, one line
that says so. The product never imports it (only the ``channelcast bench`` command does,
when it runs), and it must never start brokers or reach into the repository's scripts: a
private Kafka for a full run and the folder of Kafka's jars come from outside
(``scripts/bench``, ``--bootstrap``, ``--kafka-libs``).

Library functions the CLI and the tests call: :func:`run_bench` (all scenarios, one
process, one broker), :func:`bench` (plus the output folder), :class:`BenchConfig`
(:meth:`BenchConfig.quick` for the test suite). Scenarios live in :mod:`.scenarios`,
:mod:`.fanout` and :mod:`.filtering` (its readers are processes of their own,
:mod:`.nodes`, driven through :mod:`.procs`), the raw confluent-kafka baselines in
:mod:`.raw`, Kafka's Java tools in :mod:`.java`, histograms and fixed-rate schedules in
:mod:`.hist`, files in :mod:`.report`.
It never asserts speed; it measures and reports.
"""

from __future__ import annotations

try:  # the `bench` extra, checked before anything else is imported
    import hdrh.histogram  # noqa: F401
    import matplotlib  # noqa: F401
except ModuleNotFoundError as _missing:
    from channelcast.errors import MissingDependency

    raise MissingDependency(
        f"channelcast bench needs the 'bench' extra ({_missing.name} is not installed): "
        "in a checkout: scripts/install; elsewhere: pip install 'channelcast[bench]'"
    ) from _missing

from channelcast.bench.hist import FixedRate, LatencyRecorder, LatencySummary
from channelcast.bench.model import (
    READ_COUNT,
    READ_FILTER,
    READ_GATEWAY,
    SCENARIOS,
    BenchConfig,
    BenchResults,
    LatencyRun,
    ReadRun,
    StrategyResult,
    ThroughputRow,
)
from channelcast.bench.report import check_targets, render_markdown, write_outputs
from channelcast.bench.runner import CEILING_NOT_RUN, DEFAULT_OUTPUT, bench, run_bench
from channelcast.bench.targets import KafkaTarget, MemoryTarget

__all__ = [
    "CEILING_NOT_RUN",
    "DEFAULT_OUTPUT",
    "READ_COUNT",
    "READ_FILTER",
    "READ_GATEWAY",
    "SCENARIOS",
    "BenchConfig",
    "BenchResults",
    "FixedRate",
    "KafkaTarget",
    "LatencyRecorder",
    "LatencyRun",
    "LatencySummary",
    "MemoryTarget",
    "ReadRun",
    "StrategyResult",
    "ThroughputRow",
    "bench",
    "check_targets",
    "render_markdown",
    "run_bench",
    "write_outputs",
]
