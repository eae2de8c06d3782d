"""Fixtures for the operations tests: a config whose topics carry the test's unique suffix,
an admin client on the shared broker, and cleanup of the topics a test created."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.config import Settings, load_settings
from channelcast.ops.provision import apply_plan, plan_topics
from channelcast.strategies import create_strategy

ConfigWriter = Callable[..., Path]


def provisioned(write_config: ConfigWriter, admin: KafkaAdmin) -> tuple[Path, Settings]:
    """A written config (see ``write_config``) whose topics exist on the cluster."""
    path = write_config()
    settings = load_settings(path, env={})
    apply_plan(plan_topics(settings, admin), admin)
    return path, settings


def target_topics(settings: Settings) -> list[str]:
    """The topics the config's strategy declares."""
    return [s.name for s in create_strategy(settings.kafka).topics()]


@pytest.fixture
def cleanup_topics() -> list[str]:
    """Topic names a test created; the ``admin`` fixture deletes them afterwards."""
    return []


@pytest.fixture
def admin(kafka_bootstrap: str, cleanup_topics: list[str]) -> Iterator[KafkaAdmin]:
    client = KafkaAdmin(kafka_bootstrap, timeout_s=15)
    yield client
    client.delete_topics(sorted(set(cleanup_topics)))


@pytest.fixture
def write_config(tmp_path: Path, kafka_bootstrap: str, unique: str,
                 cleanup_topics: list[str], admin: KafkaAdmin) -> ConfigWriter:
    """Write a grouped-strategy config; topics are ``ops.<name>.<unique>`` and cleaned up."""

    def write(*, user_partitions: int = 4, public_partitions: int = 2,
              default_partitions: int = 3, replication_factor: int = 1,
              retention_ms: int = 3_600_000, name: str = "channelcast.toml",
              topic_prefix: str | None = None) -> Path:
        user, public, default = (f"ops.user.{unique}", f"ops.public.{unique}",
                                 f"ops.default.{unique}")
        cleanup_topics.extend((user, public, default))
        path = tmp_path / name
        path.write_text(f"""
broker = "kafka://{kafka_bootstrap}"

[kafka]
topic_strategy = "grouped"
default_topic = "{default}"
topic_prefix = "{topic_prefix or 'lg' + unique}"
default_partitions = {default_partitions}
replication_factor = {replication_factor}
dead_letter_topic = "ops.dlq.{unique}"
timeout_s = 15

[kafka.topic_mapping."user.*"]
topic = "{user}"
partitions = {user_partitions}
config = {{ "retention.ms" = "{retention_ms}" }}

[kafka.topic_mapping."public.*"]
topic = "{public}"
partitions = {public_partitions}
""", encoding="utf-8")
        return path

    return write
