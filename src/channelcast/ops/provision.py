"""Topic provisioning: compare the topics a config needs with the cluster, then apply.

:func:`plan_topics` is the dry run: for every topic of the strategy (only those, never the
rest of the cluster) it says *create*, *change* or *ok*, covering partitions, replication
factor and topic configs. :func:`apply_plan` creates what is missing and sets differing
configs. It never shrinks a topic (Kafka cannot) and grows partitions only with
``force=True``, because a keyed topic's channels move to other partitions when the count
changes, which breaks per-channel order during the switch. A replicated topic gets
``min.insync.replicas = min(2, RF)`` unless its config sets it (:func:`durable_configs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from channelcast.errors import ConfigError
from channelcast.strategies import TopicSpec, create_strategy
from channelcast.types import TopicName

if TYPE_CHECKING:
    from channelcast.brokers.kafka.admin import KafkaAdmin
    from channelcast.config import Settings

Action = Literal["create", "change", "ok"]

MIN_INSYNC_REPLICAS = "min.insync.replicas"

PARTITION_INCREASE_HELP = (
    "Adding partitions to a keyed topic moves channels: the partition of a channel is "
    "hash(channel) % partitions, so after the change most channels are published to a "
    "different partition while consumers may still be reading their older messages from "
    "the old one, and per-channel order breaks during the switch. Safe procedure: "
    "(1) stop or pause the publishers of the topic; (2) drain: wait until every consumer "
    "group's lag on the topic is 0 (`channelcast monitor --group ...`); (3) run "
    "`channelcast topics apply --force`; (4) restart the publishers. "
    "Alternatively create a new topic with the new count, point the mapping at it, and "
    "move old data with `channelcast migrate`."
)


@dataclass(frozen=True, slots=True)
class TopicChange:
    """One row of the plan: what the config wants against what the cluster has."""

    topic: TopicName
    action: Action
    want_partitions: int
    want_replication_factor: int
    want_configs: Mapping[str, str]
    have_partitions: int | None = None
    have_replication_factor: int | None = None
    have_configs: Mapping[str, str] = field(default_factory=dict)
    config_changes: Mapping[str, str] = field(default_factory=dict)
    partitions_key: str = "kafka.default_partitions"
    notes: tuple[str, ...] = ()

    @property
    def partition_increase(self) -> bool:
        return self.have_partitions is not None and self.want_partitions > self.have_partitions

    @property
    def partition_decrease(self) -> bool:
        return self.have_partitions is not None and self.want_partitions < self.have_partitions

    @property
    def replication_differs(self) -> bool:
        return (self.have_replication_factor is not None
                and self.have_replication_factor != self.want_replication_factor)

    def to_dict(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "action": self.action,
            "partitions": {"want": self.want_partitions, "have": self.have_partitions},
            "replication_factor": {"want": self.want_replication_factor,
                                   "have": self.have_replication_factor},
            "configs": {k: {"want": v, "have": self.have_configs.get(k)}
                        for k, v in sorted(self.want_configs.items())},
            "config_changes": dict(self.config_changes),
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """The whole comparison. ``errors`` make :func:`apply_plan` refuse to start."""

    bootstrap: str
    brokers: int
    strategy: str
    rows: tuple[TopicChange, ...]
    errors: tuple[ConfigError, ...] = ()

    @property
    def changes(self) -> tuple[TopicChange, ...]:
        return tuple(r for r in self.rows if r.action != "ok")

    @property
    def needs_force(self) -> tuple[TopicChange, ...]:
        return tuple(r for r in self.rows if r.partition_increase)

    def check(self) -> None:
        """Raise the first blocking problem (RF above broker count, partition decrease)."""
        if self.errors:
            raise self.errors[0]

    def to_dict(self) -> dict[str, object]:
        return {"bootstrap": self.bootstrap, "brokers": self.brokers,
                "strategy": self.strategy, "topics": [r.to_dict() for r in self.rows],
                "errors": [str(e) for e in self.errors]}


@dataclass(frozen=True, slots=True)
class ApplyResult:
    created: tuple[str, ...] = ()
    partitions_added: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    configs_set: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.partitions_added or self.configs_set)

    def to_dict(self) -> dict[str, object]:
        return {"created": list(self.created),
                "partitions_added": {t: {"from": a, "to": b}
                                     for t, (a, b) in self.partitions_added.items()},
                "configs_set": {t: dict(c) for t, c in self.configs_set.items()}}


def durable_configs(configs: Mapping[str, str], replication_factor: int) -> dict[str, str]:
    """``configs`` plus ``min.insync.replicas = min(2, replication_factor)`` when the topic
    is replicated and the key is not configured.

    Our producer writes with ``acks=all``, which waits for the *in-sync* replicas only:
    with the broker default of 1, a leader whose followers fell behind acknowledges alone,
    and losing it loses acknowledged messages. Two in-sync copies make an acknowledged
    message survive one broker; more than 2 would make a publish fail as soon as one of
    three brokers is down.
    """
    out = dict(configs)
    if replication_factor >= 2 and MIN_INSYNC_REPLICAS not in out:
        out[MIN_INSYNC_REPLICAS] = str(min(2, replication_factor))
    return out


def desired_topics(settings: Settings, *, dead_letter: bool = False) -> list[TopicSpec]:
    """The topics the configured strategy declares (RF defaulted; configs with
    :func:`durable_configs`), optionally plus the DLQ."""
    k = settings.kafka
    specs = []
    for s in create_strategy(k).topics():
        rf = s.replication_factor or k.replication_factor
        specs.append(TopicSpec(s.name, s.partitions, rf, durable_configs(s.config, rf)))
    if dead_letter and all(s.name != k.dead_letter_topic for s in specs):
        specs.append(TopicSpec(TopicName(k.dead_letter_topic), 1, k.replication_factor,
                               durable_configs({}, k.replication_factor)))
    return specs


def _partitions_key(settings: Settings, topic: str) -> str:
    for m in settings.kafka.topic_mapping:
        if m.topic == topic:
            return f'kafka.topic_mapping."{m.pattern}".partitions'
    return "kafka.default_partitions"


def _replication_key(settings: Settings, topic: str) -> str:
    for m in settings.kafka.topic_mapping:
        if m.topic == topic and m.replication_factor is not None:
            return f'kafka.topic_mapping."{m.pattern}".replication_factor'
    return "kafka.replication_factor"


def plan_topics(settings: Settings, admin: KafkaAdmin, *,
                dead_letter: bool = False) -> TopicPlan:
    """Compare the config's topics with the cluster. Reads only; changes nothing."""
    specs = desired_topics(settings, dead_letter=dead_letter)
    brokers = admin.broker_count()
    have = admin.describe_topics([s.name for s in specs])
    rows: list[TopicChange] = []
    errors: list[ConfigError] = []
    for spec in specs:
        rf = spec.replication_factor or settings.kafka.replication_factor
        key = _partitions_key(settings, spec.name)
        want_configs = {k: str(v) for k, v in spec.config.items()}
        if rf > brokers:
            errors.append(ConfigError(
                _replication_key(settings, spec.name),
                f"topic {spec.name!r} needs replication factor {rf} but the cluster at "
                f"{admin.bootstrap} has only {brokers} broker(s); lower it or add brokers"))
        current = have.get(spec.name)
        if current is None:
            rows.append(TopicChange(spec.name, "create", spec.partitions, rf, want_configs,
                                    config_changes=want_configs, partitions_key=key))
            continue
        changes = {k: v for k, v in want_configs.items() if current.configs.get(k) != v}
        notes: list[str] = []
        row = TopicChange(spec.name, "ok", spec.partitions, rf, want_configs,
                          current.partitions, current.replication_factor,
                          {k: current.configs[k] for k in want_configs if k in current.configs},
                          changes, key)
        if row.partition_decrease:
            errors.append(ConfigError(key, (
                f"topic {spec.name!r} has {current.partitions} partitions on the cluster but "
                f"the config asks for {spec.partitions}: Kafka cannot remove partitions. "
                "Raise the config back, or create a new topic and move data with "
                "`channelcast migrate`")))
            notes.append("refused: cannot reduce partitions")
        if row.partition_increase:
            notes.append(f"partitions {current.partitions} -> {spec.partitions}: "
                         "moves channels, needs --force (drain first)")
        if row.replication_differs:
            notes.append(f"replication factor is {current.replication_factor}, config says {rf}:"
                         " apply does not change it (use kafka-reassign-partitions)")
        if changes:
            notes.append("configs: " + ", ".join(
                f"{k} {current.configs.get(k)} -> {v}" for k, v in sorted(changes.items())))
        action: Action = "change" if (changes or row.partition_increase
                                      or row.partition_decrease or row.replication_differs) \
            else "ok"
        rows.append(TopicChange(row.topic, action, row.want_partitions, rf, want_configs,
                                row.have_partitions, row.have_replication_factor,
                                row.have_configs, changes, key, tuple(notes)))
    return TopicPlan(admin.bootstrap, brokers, settings.kafka.topic_strategy, tuple(rows),
                     tuple(errors))


def apply_plan(plan: TopicPlan, admin: KafkaAdmin, *, force: bool = False) -> ApplyResult:
    """Make the cluster match the plan. Checks everything before changing anything.

    Raises ConfigError for a replication factor above the broker count, a partition
    decrease, or (without ``force``) a partition increase, naming the config key and the
    safe procedure. Applying an all-``ok`` plan does nothing.
    """
    plan.check()
    if plan.needs_force and not force:
        row = plan.needs_force[0]
        raise ConfigError(row.partitions_key, (
            f"topic {row.topic!r} would grow from {row.have_partitions} to "
            f"{row.want_partitions} partitions; refusing without --force. "
            + PARTITION_INCREASE_HELP))
    to_create = [TopicSpec(r.topic, r.want_partitions, r.want_replication_factor,
                           dict(r.want_configs)) for r in plan.rows if r.action == "create"]
    created = admin.create_topics(to_create) if to_create else []
    added: dict[str, tuple[int, int]] = {}
    configs: dict[str, Mapping[str, str]] = {}
    for row in plan.rows:
        if row.action != "change":
            continue
        if row.config_changes:
            admin.set_configs(row.topic, row.config_changes)
            configs[row.topic] = dict(row.config_changes)
        if row.partition_increase and row.have_partitions is not None:
            admin.add_partitions(row.topic, row.want_partitions)
            added[row.topic] = (row.have_partitions, row.want_partitions)
    return ApplyResult(tuple(created), added, configs)
