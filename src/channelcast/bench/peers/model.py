"""The peers comparison's results: plain dataclasses, no I/O.

A :class:`PeerResult` is one contender in one scenario (channelcast's side counts as one):
its version, the settings it ran with, what it negotiated, and one :class:`PeerRun` of
named figures per repeat, or the reason it was not run. Medians and spreads are taken
here, so the report and the targets read the same numbers.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from channelcast.bench.model import PEER_SCENARIOS, BenchConfig

FANOUT, PUBLISH, KAFKA_BROWSER = PEER_SCENARIOS

# Figure names (units in the name).
DELIVERIES_PER_S = "deliveries/s"
CPU_US_PER_DELIVERY = "server CPU µs/delivery"
CLIENT_CPU_US_PER_DELIVERY = "client CPU µs/delivery"
"""The fan-out client process's CPU (1,000 Python clients, one process) over the burst."""
FRAMES_PER_DELIVERY = "frames/delivery"
"""WebSocket frames per delivered message in the burst (below 1: several per frame)."""
P50_MS, P99_MS, P999_MS, MAX_MS = "p50 ms", "p99 ms", "p99.9 ms", "max ms"
MSG_PER_S = "msg/s"
CPU_US_PER_MSG = "process CPU µs/msg"
DELIVERED = "delivered %"


@dataclass(slots=True)
class PeerRun:
    """One run of one contender: figures by name, and what the run noticed."""

    figures: dict[str, float] = field(default_factory=dict)
    note: str = ""
    load_average: str = ""


@dataclass(slots=True)
class PeerResult:
    scenario: str
    name: str
    version: str = ""
    channelcast: bool = False
    """channelcast's own side (the others are the peers it is compared with)."""
    settings: str = ""
    negotiated: str = ""
    """The Sec-WebSocket-Extensions the server answered Chromium's offer with."""
    not_run: str = ""
    """Why it was not run (a missing binary or package, no Kafka); empty when it ran."""
    runs: list[PeerRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return not self.not_run and bool(self.runs)

    def values(self, figure: str) -> list[float]:
        return [v for r in self.runs
                if not math.isnan(v := r.figures.get(figure, math.nan))]

    def median(self, figure: str) -> float:
        values = self.values(figure)
        return statistics.median(values) if values else math.nan

    def spread(self, figure: str) -> tuple[float, float]:
        values = self.values(figure)
        return (min(values), max(values)) if values else (math.nan, math.nan)


@dataclass(slots=True)
class PeersResults:
    config: BenchConfig
    broker: str
    peers_dir: str
    machine: dict[str, str] = field(default_factory=dict)
    results: list[PeerResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: str = ""
    seconds: float = 0.0

    def scenario(self, name: str) -> list[PeerResult]:
        return [r for r in self.results if r.scenario == name]

    def result(self, scenario: str, name: str) -> PeerResult | None:
        return next((r for r in self.results if r.scenario == scenario and r.name == name),
                    None)
