"""Running the peers comparison: :func:`run_peers` (every wanted peers scenario, one
process, one broker) and :func:`peers_bench` (plus the report folder).

A scenario that fails is recorded in ``results.errors`` and the others still run; a
scenario that needs Kafka without one, or a peer that is missing, is listed as not run.
The servers' configs and logs live in a temp folder removed at the end (a failure quotes
the end of the log). Neither function starts a broker or builds a peer.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from channelcast.bench.model import PEER_SCENARIOS, BenchConfig
from channelcast.bench.peers.install import (
    PEERS_DIR_ENV,
    PYTHON_HINT,
    find_centrifugo,
    find_sockudo,
    package_version,
)
from channelcast.bench.peers.model import (
    FANOUT,
    PUBLISH,
    PeerResult,
    PeersResults,
)
from channelcast.bench.peers.report import write_peer_outputs
from channelcast.bench.targets import KafkaTarget, MemoryTarget, Target, describe_machine

Log = Callable[[str], None]

NEEDS_KAFKA = "needs Kafka (--bootstrap, or scripts/bench --peers)"


def _quiet(_msg: str) -> None:
    return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def run_peers(target: Target, config: BenchConfig, peers_dir: Path,
                    log: Log = _quiet) -> PeersResults:
    """Run the peers scenarios named in ``config.scenarios`` (all three when it names
    none of them) against ``target``, with the peers found in ``peers_dir``."""
    wanted = [s for s in PEER_SCENARIOS if s in config.scenarios] or list(PEER_SCENARIOS)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    machine = describe_machine(target)
    machine["gc_frozen_objects"] = f"{gc.get_freeze_count():,}"
    for dist in ("websockets", "uvicorn", "faststream", "broadcaster", "aiokafka", "httpx"):
        machine[dist] = package_version(dist)
    results = PeersResults(config=config, broker=target.url, peers_dir=str(peers_dir),
                           machine=machine, started=started)
    t0 = time.perf_counter()
    centrifugo, sockudo = find_centrifugo(peers_dir), find_sockudo(peers_dir)
    for peer in (centrifugo, sockudo):
        machine[peer.name] = (f"{peer.version} ({peer.path})" if peer.found
                              else f"not found: {peer.missing}")
    if target.bootstrap is not None and config.warm_up_s > 0:
        from channelcast.bench.scenarios import warm_up_broker

        try:
            took = await warm_up_broker(target, config, log)
            machine["broker_warm_up"] = f"{took:.0f} s of raw load before the scenarios"
        except Exception as exc:
            results.errors.append(f"warm-up: {_describe(exc)}")
    with tempfile.TemporaryDirectory(prefix="channelcast-peers-") as tmp:
        workdir = Path(tmp)
        for scenario in PEER_SCENARIOS:
            if scenario not in wanted:
                continue
            if scenario != FANOUT and target.bootstrap is None:
                _not_run(results, scenario, NEEDS_KAFKA)
                continue
            try:
                # The scenario modules import the HTTP client (the peers extra) on use.
                if scenario == FANOUT:
                    from channelcast.bench.peers.fanout import peers_fanout

                    results.results += await peers_fanout(config, centrifugo, sockudo,
                                                          workdir, log)
                elif scenario == PUBLISH:
                    from channelcast.bench.peers.publish import peers_publish

                    results.results += await peers_publish(target, config, log)
                else:
                    from channelcast.bench.peers.kafka_browser import peers_kafka_browser

                    results.results += await peers_kafka_browser(target, config, centrifugo,
                                                                 workdir, log)
            except ModuleNotFoundError as exc:
                _not_run(results, scenario, f"{exc.name} is not installed ({PYTHON_HINT})")
            except Exception as exc:
                results.errors.append(f"{scenario}: {_describe(exc)}")
    for r in results.results:
        results.errors += [f"{r.scenario}, {r.name}: {e}" for e in r.errors]
    results.seconds = time.perf_counter() - t0
    results.machine["load_average_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return results


def _not_run(results: PeersResults, scenario: str, why: str) -> None:
    results.skipped.append(f"{scenario}: not run: {why}")
    results.results.append(PeerResult(scenario, "every contender", not_run=why))


def peers_bench(config: BenchConfig, *, peers_dir: Path, bootstrap: str | None = None,
                output: Path = Path("bench-results"), log: Log = _quiet,
                ping_timeout_s: float = 10.0) -> tuple[PeersResults, dict[str, Path]]:
    """:func:`run_peers` on Kafka at ``bootstrap`` (or the memory broker: fan-out only),
    then report.md, results.json and peers.png in a new folder under ``output``. Raises
    BrokerUnavailable (nothing run) if Kafka does not answer within ``ping_timeout_s``."""
    target: Target
    if bootstrap:
        from channelcast.bench.runner import kafka_target_for

        kafka: KafkaTarget = kafka_target_for(config, bootstrap)
        kafka.ping(ping_timeout_s)
        target = kafka
    else:
        target = MemoryTarget()
    results = asyncio.run(run_peers(target, config, peers_dir, log))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    paths = write_peer_outputs(results, output / f"{stamp}-{config.run_id}-peers")
    return results, paths


__all__ = ["NEEDS_KAFKA", "PEERS_DIR_ENV", "peers_bench", "run_peers"]
