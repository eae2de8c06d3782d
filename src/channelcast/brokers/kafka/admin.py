"""The Kafka admin adapter: topics, partitions, configs, watermarks, offsets by time, group
offsets.

Owns every call to confluent-kafka's ``AdminClient``. All calls are blocking and bounded by
``timeout_s``; async callers run them in a thread. Kafka errors leave this module only as
channelcast errors, through the one map of :mod:`channelcast.brokers.kafka.errors` (a bad
replication factor or topic config is a ConfigError; a refusal a BrokerError); it acts
on a code itself only to accept "already exists" when creating and "unknown topic" when
deleting. It never deletes or shrinks anything on its own:
:meth:`KafkaAdmin.delete_topics` exists for tests and is never called by the CLI.

The one function other modules need most is :func:`ensure_topics` (idempotent create).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)

# confluent_kafka.admin has no __all__, so mypy --strict sees no explicit re-exports.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from channelcast.brokers.kafka.errors import has_code, kafka_errors, translate
from channelcast.errors import BrokerError, BrokerUnavailable, ConfigError
from channelcast.strategies.base import TopicSpec
from channelcast.types import TopicName

__all__ = [
    "GroupOffsets",
    "KafkaAdmin",
    "TopicDescription",
    "Watermark",
    "ensure_topics",
]

T = TypeVar("T")

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())
log.propagate = False  # librdkafka retries connections noisily; failures surface as errors

@dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic as the cluster has it. ``configs`` holds every effective value;
    ``overrides`` only the ones set on the topic itself (not broker defaults)."""

    name: TopicName
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)
    overrides: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Watermark:
    """Low (oldest kept) and high (next to be written) offsets of one partition."""

    topic: str
    partition: int
    low: int
    high: int

    @property
    def count(self) -> int:
        """Messages currently held (exact for non-compacted, non-transactional topics)."""
        return max(0, self.high - self.low)


@dataclass(frozen=True, slots=True)
class GroupOffsets:
    """A consumer group's committed offset per partition (-1: nothing committed)."""

    group: str
    committed: Mapping[tuple[str, int], int]


def _admin_errors(doing: str) -> AbstractContextManager[None]:
    """Kafka failures of an admin call as channelcast errors (it publishes nothing, so a
    refusal is a BrokerError, not a PublishError)."""
    return kafka_errors(doing, refused=BrokerError)


class KafkaAdmin:
    """A small, blocking admin client. Use as a context manager or just drop it
    (AdminClient has nothing to flush)."""

    def __init__(self, bootstrap: str, *, timeout_s: float = 10.0,
                 config: Mapping[str, Any] | None = None) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
            "logger": log,
        }
        conf.update(config or {})
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        with _admin_errors(f"creating an admin client for {bootstrap}"):
            self._client = AdminClient(conf)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    # --- helpers ---------------------------------------------------------------------

    def _wait(self, future: concurrent.futures.Future[T], doing: str) -> T:
        with _admin_errors(doing):
            return future.result(timeout=self.timeout_s + 1)

    def _metadata(self, topic: str | None = None) -> Any:
        with _admin_errors(f"reading metadata from {self.bootstrap}"):
            return self._client.list_topics(topic=topic, timeout=self.timeout_s)

    # --- reading ---------------------------------------------------------------------

    def broker_count(self) -> int:
        return len(self._metadata().brokers)

    def list_topics(self, *, internal: bool = False) -> list[str]:
        names = self._metadata().topics
        return sorted(n for n in names if internal or not n.startswith("__"))

    def partitions(self, topics: Iterable[str]) -> dict[str, int]:
        """Partition counts of the given topics that exist (missing ones are left out)."""
        meta = self._metadata().topics
        out: dict[str, int] = {}
        for name in topics:
            tmeta = meta.get(name)
            if tmeta is not None and tmeta.error is None:
                out[name] = len(tmeta.partitions)
        return out

    def describe_topics(self, names: Iterable[str]) -> dict[str, TopicDescription]:
        """Partitions, replication factor and configs of the topics that exist."""
        wanted = list(dict.fromkeys(names))
        meta = self._metadata().topics
        present = [n for n in wanted if n in meta and meta[n].error is None]
        if not present:
            return {}
        resources = [ConfigResource(ResourceType.TOPIC, n) for n in present]
        with _admin_errors("describing topic configs"):
            futures = self._client.describe_configs(resources, request_timeout=self.timeout_s)
        out: dict[str, TopicDescription] = {}
        for resource, future in futures.items():
            name = resource.name
            entries: dict[str, ConfigEntry] = self._wait(future, f"describing topic {name}")
            tmeta = meta[name]
            rf = max((len(p.replicas) for p in tmeta.partitions.values()), default=0)
            configs = {k: str(e.value) for k, e in entries.items() if e.value is not None}
            overrides = {k: str(e.value) for k, e in entries.items()
                         if e.value is not None and not e.is_default
                         and ConfigSource(e.source) == ConfigSource.DYNAMIC_TOPIC_CONFIG}
            out[name] = TopicDescription(TopicName(name), len(tmeta.partitions), rf,
                                         configs, overrides)
        return {n: out[n] for n in present if n in out}

    def watermarks(self, topics: Iterable[str]) -> list[Watermark]:
        """Low and high offsets of every partition of the given (existing) topics."""
        counts = self.partitions(topics)
        if not counts:
            return []
        earliest: dict[TopicPartition, OffsetSpec] = {}
        latest: dict[TopicPartition, OffsetSpec] = {}
        first: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
        last: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        for name, n in counts.items():
            for p in range(n):
                earliest[TopicPartition(name, p)] = first
                latest[TopicPartition(name, p)] = last
        lows = self._offsets(earliest)
        highs = self._offsets(latest)
        return [Watermark(t, p, lows[(t, p)], highs[(t, p)])
                for (t, p) in sorted(highs) if (t, p) in lows]

    def offsets_at(self, partitions: Iterable[tuple[str, int]],
                   timestamp_ms: int) -> dict[tuple[str, int], int | None]:
        """Per (topic, partition): the first offset whose record timestamp is at or after
        ``timestamp_ms`` (Unix ms), or None when no record is that recent."""
        spec: OffsetSpec = OffsetSpec.for_timestamp(timestamp_ms)
        found = self._offsets({TopicPartition(t, p): spec for t, p in partitions})
        return {tp: (offset if offset >= 0 else None) for tp, offset in found.items()}

    def _offsets(self, request: dict[TopicPartition, OffsetSpec]) -> dict[tuple[str, int], int]:
        """Offsets per partition. Retries while leadership settles (just-created topics)."""
        deadline = time.monotonic() + self.timeout_s
        out: dict[tuple[str, int], int] = {}
        todo = dict(request)
        while True:
            with _admin_errors("listing offsets"):
                futures = self._client.list_offsets(todo, request_timeout=self.timeout_s)
            again: dict[TopicPartition, OffsetSpec] = {}
            for tp, future in futures.items():
                doing = f"listing offsets of {tp.topic}[{tp.partition}]"
                try:
                    info = future.result(timeout=self.timeout_s + 1)
                except (KafkaException, TimeoutError) as exc:
                    error = translate(exc, doing, refused=BrokerError)
                    # Leadership settling (a just-created topic), or anything else the
                    # map calls retriable: ask again until the deadline.
                    if (isinstance(error, BrokerError) and error.retriable
                            and time.monotonic() < deadline):
                        again[tp] = todo[tp]
                        continue
                    raise error from exc
                out[(tp.topic, tp.partition)] = int(info.offset)
            if not again:
                return out
            todo = again
            time.sleep(0.1)

    def list_groups(self) -> list[str]:
        with _admin_errors("listing consumer groups"):
            future = self._client.list_consumer_groups(request_timeout=self.timeout_s)
        result = self._wait(future, "listing consumer groups")
        return sorted(g.group_id for g in result.valid)

    def group_offsets(self, group: str) -> GroupOffsets:
        """The committed offsets of one consumer group (every partition it committed)."""
        with _admin_errors(f"reading offsets of group {group}"):
            futures = self._client.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout_s)
        result = self._wait(futures[group], f"reading offsets of group {group}")
        committed = {(tp.topic, tp.partition): int(tp.offset)
                     for tp in result.topic_partitions or ()}
        return GroupOffsets(group, committed)

    # --- changing --------------------------------------------------------------------

    def create_topics(self, specs: Sequence[TopicSpec], *,
                      default_replication_factor: int = 1) -> list[str]:
        """Create the topics that do not exist yet; returns the names created.

        Existing topics are left alone (even if they differ: see channelcast.ops.provision).
        A replication factor larger than the broker count is a ConfigError, checked first.
        """
        existing = set(self._metadata().topics)
        todo = [s for s in dict((s.name, s) for s in specs).values() if s.name not in existing]
        if not todo:
            return []
        brokers = self.broker_count()
        for spec in todo:
            rf = spec.replication_factor or default_replication_factor
            if rf > brokers:
                raise ConfigError(
                    "replication_factor",
                    f"topic {spec.name!r} asks for replication factor {rf} but the cluster "
                    f"at {self.bootstrap} has only {brokers} broker(s)")
        new = [NewTopic(s.name, num_partitions=s.partitions,
                        replication_factor=s.replication_factor or default_replication_factor,
                        config={k: str(v) for k, v in s.config.items()})
               for s in todo]
        with _admin_errors("creating topics"):
            futures = self._client.create_topics(new, request_timeout=self.timeout_s,
                                                 operation_timeout=self.timeout_s)
        created: list[str] = []
        for name, future in futures.items():
            with _admin_errors(f"creating topic {name}"):
                try:
                    future.result(timeout=self.timeout_s + 1)
                except KafkaException as exc:
                    if not has_code(exc, KafkaError.TOPIC_ALREADY_EXISTS):
                        raise
                    continue  # somebody else created it meanwhile: that is fine
            created.append(name)
        self.wait_for_topics({s.name: s.partitions for s in todo if s.name in created})
        return sorted(created)

    def wait_for_topics(self, partitions: Mapping[str, int]) -> None:
        """Block until every topic shows its partitions, each with a leader."""
        deadline = time.monotonic() + self.timeout_s
        pending = dict(partitions)
        while pending:
            meta = self._metadata().topics
            for name, n in list(pending.items()):
                tmeta = meta.get(name)
                if (tmeta is not None and tmeta.error is None and len(tmeta.partitions) >= n
                        and all(p.leader >= 0 for p in tmeta.partitions.values())):
                    del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"topics not ready within {self.timeout_s}s: {', '.join(sorted(pending))}",
                    retriable=True)
            time.sleep(0.1)

    def add_partitions(self, topic: str, total: int) -> None:
        """Grow ``topic`` to ``total`` partitions. Kafka cannot shrink; callers check first."""
        with _admin_errors(f"adding partitions to {topic}"):
            futures = self._client.create_partitions(
                [NewPartitions(topic, total)], request_timeout=self.timeout_s,
                operation_timeout=self.timeout_s)
        self._wait(futures[topic], f"adding partitions to {topic}")
        self.wait_for_topics({topic: total})

    def set_configs(self, topic: str, configs: Mapping[str, str]) -> None:
        """Set topic-level configs (incrementally: other overrides stay as they are)."""
        if not configs:
            return
        entries = [ConfigEntry(k, str(v), incremental_operation=AlterConfigOpType.SET)
                   for k, v in configs.items()]
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
        with _admin_errors(f"changing configs of {topic}"):
            futures = self._client.incremental_alter_configs([resource],
                                                             request_timeout=self.timeout_s)
        for future in futures.values():
            self._wait(future, f"changing configs of {topic}")
        # The controller accepted the change; brokers apply it a moment later. Wait until
        # describe shows it, so "apply, then plan" never reports the old value.
        deadline = time.monotonic() + self.timeout_s
        wanted = {k: str(v) for k, v in configs.items()}
        while True:
            current = self.describe_topics([topic]).get(topic)
            if current is not None and all(current.configs.get(k) == v
                                           for k, v in wanted.items()):
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"configs of {topic} not visible within {self.timeout_s}s "
                                  "after the change", retriable=True)
            time.sleep(0.1)

    def delete_topics(self, names: Sequence[str]) -> None:
        """Delete topics (tests clean up with it; no CLI command calls it)."""
        if not names:
            return
        with _admin_errors("deleting topics"):
            futures = self._client.delete_topics(list(names), request_timeout=self.timeout_s,
                                                 operation_timeout=self.timeout_s)
        for name, future in futures.items():
            with _admin_errors(f"deleting topic {name}"):
                try:
                    future.result(timeout=self.timeout_s + 1)
                except KafkaException as exc:
                    if not has_code(exc, KafkaError.UNKNOWN_TOPIC_OR_PART):
                        raise
                    continue  # already gone: that is what was asked


def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec], *, timeout_s: float,
                  default_replication_factor: int = 1,
                  config: Mapping[str, Any] | None = None) -> list[str]:
    """Create the missing topics of ``specs`` (existing ones are fine); returns names created.

    Raises ConfigError when a replication factor exceeds the broker count or a topic config
    is invalid, BrokerUnavailable when Kafka does not answer within ``timeout_s``.
    """
    admin = KafkaAdmin(bootstrap, timeout_s=timeout_s, config=config)
    return admin.create_topics(specs, default_replication_factor=default_replication_factor)
