"""Acceptance on a fresh broker: a private single-node cluster with no topics at all.

``topics apply`` must create exactly the mapping's topics with their partitions, and a
second apply must change nothing. The shared dev broker is never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.cli.main import main
from channelcast.config import load_settings
from channelcast.ops.provision import apply_plan, plan_topics
from tests.conftest import private_cluster

pytestmark = [
    pytest.mark.kafka, pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300),
]

MAPPING = {"realtime.user": 10, "realtime.public": 3, "realtime": 10}


@pytest.fixture(scope="module")
def fresh_bootstrap() -> Iterator[str]:
    with private_cluster("ops-fresh", 23092) as cluster:
        yield cluster.bootstrap


def test_apply_on_a_fresh_broker_creates_exactly_the_mapping(
        fresh_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "channelcast.toml"
    config.write_text(f"""
broker = "kafka://{fresh_bootstrap}"

[kafka]
topic_strategy = "grouped"
default_topic = "realtime"
default_partitions = 10

[kafka.topic_mapping."user.*"]
topic = "realtime.user"
partitions = 10

[kafka.topic_mapping."public.*"]
topic = "realtime.public"
partitions = 3
""", encoding="utf-8")
    admin = KafkaAdmin(fresh_bootstrap, timeout_s=30)
    assert admin.list_topics() == []
    settings = load_settings(config, env={})
    assert [r.action for r in plan_topics(settings, admin).rows] == ["create"] * 3

    assert main(["topics", "apply", "-c", str(config)]) == 0
    assert admin.list_topics() == sorted(MAPPING)
    assert admin.partitions(MAPPING) == MAPPING
    capsys.readouterr()

    assert main(["topics", "apply", "-c", str(config)]) == 0
    assert "Nothing to do" in capsys.readouterr().out
    assert admin.list_topics() == sorted(MAPPING)
    assert not apply_plan(plan_topics(settings, admin), admin).changed
