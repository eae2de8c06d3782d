"""``channelcast topics plan | apply`` against the real broker (shared dev broker)."""

from __future__ import annotations

import json

import pytest

from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.cli.main import main
from channelcast.config import load_settings
from channelcast.errors import ConfigError
from channelcast.ops.provision import apply_plan, plan_topics
from tests.ops.conftest import ConfigWriter

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def test_apply_creates_exactly_the_mapping_topics_and_is_idempotent(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str) -> None:
    settings = load_settings(write_config(), env={})
    plan = plan_topics(settings, admin)
    assert {r.topic: r.action for r in plan.rows} == {
        f"ops.user.{unique}": "create", f"ops.public.{unique}": "create",
        f"ops.default.{unique}": "create"}

    result = apply_plan(plan, admin)
    assert sorted(result.created) == sorted(r.topic for r in plan.rows)
    on_cluster = {t for t in admin.list_topics() if t.endswith(unique)}
    assert on_cluster == {r.topic for r in plan.rows}
    described = admin.describe_topics(on_cluster)
    assert {t: d.partitions for t, d in described.items()} == {
        f"ops.user.{unique}": 4, f"ops.public.{unique}": 2, f"ops.default.{unique}": 3}
    assert described[f"ops.user.{unique}"].overrides["retention.ms"] == "3600000"

    again = plan_topics(settings, admin)
    assert [r.action for r in again.rows] == ["ok", "ok", "ok"]
    assert not apply_plan(again, admin).changed


def test_cli_apply_twice_second_is_noop(write_config: ConfigWriter, admin: KafkaAdmin,
                                        unique: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write_config())
    assert main(["topics", "plan", "-c", path, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [t["action"] for t in plan["topics"]] == ["create"] * 3
    assert main(["topics", "apply", "-c", path, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(first["applied"]["created"]) == 3
    assert main(["topics", "apply", "-c", path]) == 0
    out = capsys.readouterr().out
    assert "Nothing to do" in out
    assert main(["topics", "apply", "-c", path, "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["applied"] == {"created": [], "partitions_added": {}, "configs_set": {}}


def test_partition_increase_needs_force_and_explains(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    apply_plan(plan_topics(load_settings(write_config(), env={}), admin), admin)
    grown = write_config(user_partitions=6, name="grown.toml")
    plan = plan_topics(load_settings(grown, env={}), admin)
    [row] = plan.needs_force
    assert (row.topic, row.have_partitions, row.want_partitions) == (
        f"ops.user.{unique}", 4, 6)
    with pytest.raises(ConfigError, match="--force") as info:
        apply_plan(plan, admin)
    assert info.value.key == 'kafka.topic_mapping."user.*".partitions'
    assert "drain" in str(info.value).lower()
    assert admin.partitions([row.topic]) == {row.topic: 4}

    assert main(["topics", "apply", "-c", str(grown)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    [line] = captured.err.strip().splitlines()
    assert line.startswith("error: ")
    assert "--force" in line
    assert "drain" in captured.out.lower()  # the plan's warning explains the procedure

    assert main(["topics", "apply", "-c", str(grown), "--force"]) == 0
    assert admin.partitions([row.topic]) == {row.topic: 6}


def test_partition_decrease_is_refused_even_with_force(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str) -> None:
    apply_plan(plan_topics(load_settings(write_config(), env={}), admin), admin)
    shrunk = load_settings(write_config(public_partitions=1, name="shrunk.toml"), env={})
    plan = plan_topics(shrunk, admin)
    with pytest.raises(ConfigError, match="cannot remove partitions"):
        apply_plan(plan, admin, force=True)
    assert admin.partitions([f"ops.public.{unique}"]) == {f"ops.public.{unique}": 2}


def test_config_change_is_applied_without_force(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str) -> None:
    apply_plan(plan_topics(load_settings(write_config(), env={}), admin), admin)
    changed = load_settings(write_config(retention_ms=7_200_000, name="ret.toml"), env={})
    plan = plan_topics(changed, admin)
    rows = {r.topic: r for r in plan.rows}
    assert rows[f"ops.user.{unique}"].action == "change"
    assert rows[f"ops.user.{unique}"].config_changes == {"retention.ms": "7200000"}
    result = apply_plan(plan, admin)
    assert result.configs_set == {f"ops.user.{unique}": {"retention.ms": "7200000"}}
    topic = f"ops.user.{unique}"
    assert admin.describe_topics([topic])[topic].configs["retention.ms"] == "7200000"
    assert [r.action for r in plan_topics(changed, admin).rows] == ["ok"] * 3


def test_replication_factor_above_broker_count_is_a_clear_error(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert admin.broker_count() == 1
    path = write_config(replication_factor=3)
    plan = plan_topics(load_settings(path, env={}), admin)
    with pytest.raises(ConfigError, match=r"replication factor 3.*only 1 broker"):
        apply_plan(plan, admin)
    assert not [t for t in admin.list_topics() if t.endswith(unique)]

    assert main(["topics", "apply", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("error: kafka.replication_factor:")
    assert "1 broker" in line


def test_unreachable_kafka_is_one_line_error(tmp_path: object, write_config: ConfigWriter,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write_config())
    assert main(["topics", "plan", "-c", path, "--brokers", "127.0.0.1:9",
                 "--timeout", "1"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ")
    assert "unreachable" in line
