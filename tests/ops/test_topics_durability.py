"""``min.insync.replicas`` on the real (single-broker) cluster: replication factor 1 leaves
it unset, so the created topics keep the broker default of 1 (RF >= 2: unit tests)."""

from __future__ import annotations

import pytest

from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.config import load_settings
from channelcast.ops.provision import MIN_INSYNC_REPLICAS, apply_plan, plan_topics
from tests.ops.conftest import ConfigWriter

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def test_rf1_topics_are_created_without_a_min_insync_override(
        write_config: ConfigWriter, admin: KafkaAdmin) -> None:
    settings = load_settings(write_config(replication_factor=1), env={})
    plan = plan_topics(settings, admin)
    assert all(MIN_INSYNC_REPLICAS not in r.want_configs for r in plan.rows)
    apply_plan(plan, admin)
    described = admin.describe_topics([r.topic for r in plan.rows])
    assert set(described) == {r.topic for r in plan.rows}
    for topic in described.values():
        assert MIN_INSYNC_REPLICAS not in topic.overrides, topic.name
        assert topic.configs[MIN_INSYNC_REPLICAS] == "1", topic.name
    assert [r.action for r in plan_topics(settings, admin).rows] == ["ok"] * len(plan.rows)
