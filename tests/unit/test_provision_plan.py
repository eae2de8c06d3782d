"""The topic plan's durability default, without a cluster: a replicated topic gets
``min.insync.replicas = min(2, RF)`` unless its config sets it, and the plan shows it."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import cast

from rich.console import Console

from channelcast.brokers.kafka.admin import KafkaAdmin, TopicDescription
from channelcast.cli.topics import _print_plan
from channelcast.config import KafkaSettings, Settings, TopicMapping
from channelcast.ops.provision import (
    MIN_INSYNC_REPLICAS,
    apply_plan,
    desired_topics,
    durable_configs,
    plan_topics,
)
from channelcast.strategies import TopicSpec
from channelcast.types import TopicName


class FakeAdmin:
    """What plan_topics and apply_plan ask of a KafkaAdmin, answered from memory."""

    bootstrap = "fake:9092"

    def __init__(self, brokers: int, topics: dict[str, TopicDescription] | None = None) -> None:
        self.brokers = brokers
        self.topics = topics or {}
        self.created: list[TopicSpec] = []
        self.set: dict[str, dict[str, str]] = {}

    def broker_count(self) -> int:
        return self.brokers

    def describe_topics(self, names: Iterable[str]) -> dict[str, TopicDescription]:
        return {n: self.topics[n] for n in names if n in self.topics}

    def create_topics(self, specs: list[TopicSpec]) -> list[str]:
        self.created.extend(specs)
        return [s.name for s in specs]

    def set_configs(self, topic: str, configs: dict[str, str]) -> None:
        self.set[topic] = dict(configs)


def settings(rf: int, **mapping_config: str) -> Settings:
    return Settings(kafka=KafkaSettings(
        default_topic="t.default", replication_factor=rf, dead_letter_topic="t.dlq",
        topic_mapping=(
            TopicMapping("user.*", TopicName("t.user"), 4, None, dict(mapping_config)),
            TopicMapping("solo.*", TopicName("t.solo"), 2, 1, {}),
        )))


def test_durable_configs_rule() -> None:
    assert durable_configs({}, 1) == {}
    assert durable_configs({}, 2) == {MIN_INSYNC_REPLICAS: "2"}
    assert durable_configs({}, 3) == {MIN_INSYNC_REPLICAS: "2"}
    assert durable_configs({"retention.ms": "5"}, 5) == {"retention.ms": "5",
                                                         MIN_INSYNC_REPLICAS: "2"}
    assert durable_configs({MIN_INSYNC_REPLICAS: "3"}, 3) == {MIN_INSYNC_REPLICAS: "3"}
    assert durable_configs({MIN_INSYNC_REPLICAS: "1"}, 3) == {MIN_INSYNC_REPLICAS: "1"}


def test_rf3_plan_creates_topics_with_min_insync_2_and_shows_it() -> None:
    admin = FakeAdmin(brokers=3)
    plan = plan_topics(settings(3), cast(KafkaAdmin, admin), dead_letter=True)
    configs = {r.topic: dict(r.want_configs) for r in plan.rows}
    assert configs == {"t.user": {MIN_INSYNC_REPLICAS: "2"},
                       "t.solo": {},  # its own replication factor is 1
                       "t.default": {MIN_INSYNC_REPLICAS: "2"},
                       "t.dlq": {MIN_INSYNC_REPLICAS: "2"}}
    as_json = {t["topic"]: t["configs"] for t in plan.to_dict()["topics"]}  # type: ignore[attr-defined]
    assert as_json["t.user"] == {MIN_INSYNC_REPLICAS: {"want": "2", "have": None}}
    out = io.StringIO()
    _print_plan(plan, Console(file=out, width=200))
    assert "min.insync.replicas=2" in out.getvalue()

    apply_plan(plan, cast(KafkaAdmin, admin))
    created = {s.name: (s.replication_factor, dict(s.config)) for s in admin.created}
    assert created["t.user"] == (3, {MIN_INSYNC_REPLICAS: "2"})
    assert created["t.solo"] == (1, {})


def test_rf2_gives_2_and_a_configured_value_wins() -> None:
    specs = {s.name: dict(s.config) for s in desired_topics(settings(2))}
    assert specs["t.user"] == {MIN_INSYNC_REPLICAS: "2"}
    configured = {s.name: dict(s.config)
                  for s in desired_topics(settings(3, **{MIN_INSYNC_REPLICAS: "3"}))}
    assert configured["t.user"] == {MIN_INSYNC_REPLICAS: "3"}
    assert configured["t.default"] == {MIN_INSYNC_REPLICAS: "2"}


def test_an_existing_rf3_topic_at_the_broker_default_is_a_change_to_2() -> None:
    existing = {"t.user": TopicDescription(TopicName("t.user"), 4, 3,
                                           {MIN_INSYNC_REPLICAS: "1", "retention.ms": "9"}),
                "t.solo": TopicDescription(TopicName("t.solo"), 2, 1,
                                           {MIN_INSYNC_REPLICAS: "1"}),
                "t.default": TopicDescription(TopicName("t.default"), 10, 3,
                                              {MIN_INSYNC_REPLICAS: "2"})}
    admin = FakeAdmin(brokers=3, topics=existing)
    plan = plan_topics(settings(3), cast(KafkaAdmin, admin))
    rows = {r.topic: r for r in plan.rows}
    assert rows["t.user"].action == "change"
    assert dict(rows["t.user"].config_changes) == {MIN_INSYNC_REPLICAS: "2"}
    assert any("min.insync.replicas 1 -> 2" in n for n in rows["t.user"].notes)
    assert rows["t.solo"].action == "ok"
    assert rows["t.default"].action == "ok"
    apply_plan(plan, cast(KafkaAdmin, admin))
    assert admin.set == {"t.user": {MIN_INSYNC_REPLICAS: "2"}}


def test_rf1_plans_no_min_insync() -> None:
    plan = plan_topics(settings(1), cast(KafkaAdmin, FakeAdmin(brokers=1)))
    assert all(MIN_INSYNC_REPLICAS not in r.want_configs for r in plan.rows)
