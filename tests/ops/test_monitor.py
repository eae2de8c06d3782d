"""``channelcast monitor`` on a deliberately skewed load (real broker)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from channelcast.brokers.base import HEADER_CHANNEL, HEADER_ID
from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.brokers.kafka.reader import LogWriter
from channelcast.cli.main import main
from channelcast.config import Settings, load_settings
from channelcast.message import Envelope, encode
from channelcast.ops.monitor import SCHEMA, Snapshot, collect, serve_metrics
from channelcast.ops.provision import apply_plan, plan_topics
from channelcast.strategies import create_strategy
from channelcast.types import ChannelName
from tests.ops.conftest import ConfigWriter

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
HOT = "user.hot"


def _skewed_load(settings: Settings, admin: KafkaAdmin) -> tuple[str, int]:
    """1500 messages on one channel, 500 spread over 50 others, all on the user topic."""
    strategy = create_strategy(settings.kafka)
    with LogWriter(admin.bootstrap) as writer:
        for n in range(2000):
            channel = HOT if n % 4 != 0 else f"user.c{n % 50}"
            route = strategy.route(ChannelName(channel))
            env = Envelope(ChannelName(channel), "tick", {"n": n})
            writer.write(route.topic, route.partition, route.key, encode(env),
                         [(HEADER_CHANNEL, channel.encode()), (HEADER_ID, env.id.encode())])
        writer.flush()
    route = strategy.route(ChannelName(HOT))
    return route.topic, route.partition


def _commit(bootstrap: str, group: str, topic: str, partition: int, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
    finally:
        consumer.close()


@pytest.fixture
def loaded(write_config: ConfigWriter, admin: KafkaAdmin) -> tuple[Path, Settings, str, int]:
    path = write_config(user_partitions=4)
    settings = load_settings(path, env={})
    apply_plan(plan_topics(settings, admin), admin)
    topic, partition = _skewed_load(settings, admin)
    return path, settings, topic, partition


def test_skewed_load_names_hot_channel_overloaded_partition_and_lag(
        loaded: tuple[Path, Settings, str, int], admin: KafkaAdmin, unique: str) -> None:
    _, _, topic, hot_partition = loaded
    group = f"ops-monitor-{unique}"
    _commit(admin.bootstrap, group, topic, hot_partition, 100)
    snap = collect(admin, [topic], groups=[group], top=3, sample=500)
    [stats] = snap.topics
    assert stats.messages == 2000
    assert len(stats.partitions) == 4
    hot_row = stats.partitions[hot_partition]
    assert hot_row.messages >= 1500
    assert hot_row.overloaded
    assert [p.partition for p in stats.partitions if p.overloaded] == [hot_partition]
    assert stats.skew == pytest.approx(hot_row.messages / 500)
    assert stats.cv > 1.0
    assert snap.hot_channels[0].channel == HOT
    assert snap.hot_channels[0].partition == hot_partition
    assert snap.hot_channels[0].rate > snap.hot_channels[1].rate * 5
    [warning] = snap.warnings
    assert (warning.topic, warning.partition) == (topic, hot_partition)
    lag = {(g.topic, g.partition): g for g in snap.lag}
    assert lag[(topic, hot_partition)].lag == hot_row.high - 100
    assert lag[(topic, hot_partition)].committed == 100
    other = next(p for p in stats.partitions if p.partition != hot_partition)
    assert lag[(topic, other.partition)].lag == other.high  # nothing committed there


def _shape(value: Any) -> Any:
    """The structure of a JSON value: key sets and element types, not the values."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _documented_example() -> dict[str, Any]:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(r"<!-- monitor-json-example -->\s*```json\n(.*?)```", text, re.S)
    assert match, "docs/operations.md lacks the monitor --json example"
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def test_json_output_matches_the_documented_schema(
        loaded: tuple[Path, Settings, str, int], admin: KafkaAdmin, unique: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    path, _, topic, hot_partition = loaded
    group = f"ops-monitor-{unique}"
    _commit(admin.bootstrap, group, topic, hot_partition, 10)
    assert main(["monitor", "-c", str(path), "--json", "--group", group, "--top", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == SCHEMA
    documented = _documented_example()
    assert _shape(data) == _shape(documented)
    assert data["hot_channels"][0]["channel"] == HOT
    assert len(data["hot_channels"]) == 2
    user = next(t for t in data["topics"] if t["topic"] == topic)
    assert [p["partition"] for p in user["partitions"] if p["overloaded"]] == [hot_partition]
    assert {t["topic"] for t in data["topics"]} == {
        f"ops.user.{unique}", f"ops.public.{unique}", f"ops.default.{unique}"}
    assert any(w["partition"] == hot_partition for w in data["warnings"])


def test_prometheus_and_table_show_the_same_figures(
        loaded: tuple[Path, Settings, str, int], admin: KafkaAdmin,
        capsys: pytest.CaptureFixture[str]) -> None:
    path, _, topic, hot_partition = loaded
    assert main(["monitor", "-c", str(path), "--prometheus", "--no-lag"]) == 0
    text = capsys.readouterr().out
    hot_high = admin.watermarks([topic])[hot_partition].high
    assert (f'channelcast_partition_overloaded{{partition="{hot_partition}",'
            f'topic="{topic}"}} 1.0') in text
    assert (f'channelcast_partition_messages{{partition="{hot_partition}",'
            f'topic="{topic}"}} {float(hot_high)}') in text
    assert re.search(rf'channelcast_hot_channel_rate\{{channel="{re.escape(HOT)}",', text)
    assert main(["monitor", "-c", str(path), "--no-lag", "--watch", "--interval", "0.1",
                 "--count", "2"]) == 0
    out = capsys.readouterr().out
    assert HOT in out
    assert "OVERLOADED" in out
    assert f"{topic}[{hot_partition}]" in out


def test_bad_arguments_give_one_line_errors(
        write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write_config())
    assert main(["monitor", "-c", path, "--json", "--prometheus"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --json/--prometheus/--watch/--serve-metrics")
    assert main(["monitor", "-c", path, "--topic", "no-such-topic-xyz"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "no such topic on the cluster: 'no-such-topic-xyz'" in line


def test_metrics_endpoint_takes_a_snapshot_per_scrape(
        loaded: tuple[Path, Settings, str, int], admin: KafkaAdmin) -> None:
    _, _, topic, hot_partition = loaded
    taken: list[int] = []

    def take() -> Snapshot:
        taken.append(1)
        return collect(admin, [topic], groups=[], top=3)

    server = serve_metrics(take, 0)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        first = httpx.get(url, timeout=30)
        assert first.status_code == 200
        assert "channelcast_monitor_up 1.0" in first.text
        assert (f'channelcast_partition_overloaded{{partition="{hot_partition}",'
                f'topic="{topic}"}} 1.0') in first.text
        assert f'channelcast_hot_channel_rate{{channel="{HOT}"' in first.text
        httpx.get(url, timeout=30)
        assert len(taken) == 2
    finally:
        server.close()
