"""``channelcast bench --peers --quick`` on real Kafka: every peers scenario runs, end to
end, with whatever peers this machine has (about 30 s here with Centrifugo and the Python
peers; a CI machine without the builds gets "not run" rows for Centrifugo and sockudo).

Nothing here is about speed: it asserts that each contender that is installed produced
its figures, and that each one that is not is reported as not run with the reason, and
that no topic was left behind.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from channelcast.bench import BenchConfig
from channelcast.bench.peers.install import (
    default_peers_dir,
    find_centrifugo,
    find_python_peer,
    find_sockudo,
)
from channelcast.bench.peers.model import (
    CLIENT_CPU_US_PER_DELIVERY,
    CPU_US_PER_MSG,
    DELIVERED,
    DELIVERIES_PER_S,
    FANOUT,
    FRAMES_PER_DELIVERY,
    KAFKA_BROWSER,
    MSG_PER_S,
    P50_MS,
    P99_MS,
    PUBLISH,
)
from channelcast.bench.peers.publish import BROADCASTER, FASTSTREAM
from channelcast.bench.peers.runner import peers_bench
from channelcast.brokers.kafka.admin import KafkaAdmin


@pytest.mark.kafka
@pytest.mark.timeout(120)
def test_quick_peers_runs_every_scenario(kafka_bootstrap: str, unique: str,
                                         tmp_path: Path) -> None:
    peers_dir = default_peers_dir()
    config = BenchConfig.quick(run_id=unique, scenarios=(FANOUT, PUBLISH, KAFKA_BROWSER))
    results, paths = peers_bench(config, peers_dir=peers_dir, bootstrap=kafka_bootstrap,
                                 output=tmp_path)
    assert results.errors == []
    assert paths["report"].exists()
    assert paths["plot"].exists()

    binaries = {"Centrifugo": find_centrifugo(peers_dir), "sockudo": find_sockudo(peers_dir)}
    fan = {r.name: r for r in results.scenario(FANOUT)}
    assert set(fan) == {"channelcast gateway", "Centrifugo", "sockudo",
                        "plain websockets broadcast"}
    for name, result in fan.items():
        peer = binaries.get(name)
        if peer is not None and not peer.found:
            assert result.not_run == peer.missing  # reported, with the reason
            continue
        assert result.ran, result
        (run,) = result.runs
        assert run.figures[DELIVERED] == 100.0, run.note
        assert run.figures[DELIVERIES_PER_S] > 0
        assert run.figures[P50_MS] > 0
        assert result.negotiated  # what the server answered Chromium's offer
        # The clients' side of the burst: frames per delivery and the client process's CPU.
        assert 0 < run.figures[FRAMES_PER_DELIVERY] <= 1, run.figures
        # (NaN when the quick burst used fewer clock ticks than measure, as the server's)
        client_cpu = run.figures[CLIENT_CPU_US_PER_DELIVERY]
        assert math.isnan(client_cpu) or client_cpu > 0, run.figures
    # channelcast's gateway declines the offered compression by default (gateway.compression
    # off, as Centrifugo and sockudo), and every client was answered alike.
    assert fan["channelcast gateway"].negotiated == (
        f"none ({config.fanout_clients}/{config.fanout_clients})")

    pub = {r.name: r for r in results.scenario(PUBLISH)}
    faststream = find_python_peer("FastStream", "faststream", "faststream.confluent",
                                  "faststream.kafka")
    broadcaster = find_python_peer("broadcaster", "broadcaster", "broadcaster", "aiokafka")
    for name, peer in [*((n, faststream) for n in FASTSTREAM), (BROADCASTER, broadcaster)]:
        if not peer.found:
            assert pub[name].not_run == peer.missing
    for result in pub.values():
        if result.not_run:
            continue
        (run,) = result.runs
        assert run.figures[MSG_PER_S] > 0
        assert run.figures[CPU_US_PER_MSG] > 0
        assert f"{config.messages:,} in" in run.note

    k2b = {r.name: r for r in results.scenario(KAFKA_BROWSER)}
    assert set(k2b) == {"Centrifugo", "channelcast gateway"}
    for name, result in k2b.items():
        peer = binaries.get(name)
        if peer is not None and not peer.found:
            assert result.not_run == peer.missing
            continue
        (run,) = result.runs
        assert run.figures[DELIVERED] == 100.0, run.note
        assert not math.isnan(run.figures[P99_MS])

    left = [t for t in KafkaAdmin(kafka_bootstrap).list_topics() if unique in t]
    assert left == []
