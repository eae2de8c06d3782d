"""Topic strategies: which topic, partition and key a channel's messages use.

Strategies and partitioners are chosen by name from a plain registry, or by import path
(``package.module:Name``) for a custom one. A custom strategy is called with the settings
(a :class:`StrategySettings`; in practice ``channelcast.config.KafkaSettings``) and must
satisfy :class:`TopicStrategy`. Nothing here imports :mod:`channelcast.config`: the config
module imports this package to check a strategy when the settings are loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from channelcast.errors import StrategyError
from channelcast.strategies.base import (
    MappingRow,
    Route,
    StrategySettings,
    TopicSpec,
    TopicStrategy,
)
from channelcast.strategies.grouped import GroupedTopics, TopicRule
from channelcast.strategies.one_per_channel import OneTopicPerChannel, legacy_topic_name
from channelcast.strategies.partitioners import (
    PARTITIONERS,
    Partitioner,
    crc32_partition,
    murmur2,
    murmur2_partition,
)
from channelcast.types import TopicName

__all__ = [
    "PARTITIONERS",
    "STRATEGIES",
    "GroupedTopics",
    "MappingRow",
    "OneTopicPerChannel",
    "Partitioner",
    "Route",
    "StrategySettings",
    "TopicRule",
    "TopicSpec",
    "TopicStrategy",
    "check_partitioner",
    "crc32_partition",
    "create_strategy",
    "legacy_topic_name",
    "load_partitioner",
    "murmur2",
    "murmur2_partition",
]


def _import(path: str, what: str) -> Any:
    """``package.module:Name`` (or ``:Outer.Name``) -> the object; StrategyError if not."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise StrategyError(f"unknown {what} {path!r}: use a known name or package.module:Name")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # user code: any failure while importing it is a bad path
        raise StrategyError(f"cannot import {what} {path!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise StrategyError(f"cannot import {what} {path!r}: {exc}") from exc
    return obj


def load_partitioner(name: str) -> Partitioner:
    """A partitioner by registry name or ``package.module:function``."""
    if name in PARTITIONERS:
        return PARTITIONERS[name]
    func = _import(name, "partitioner")
    if not callable(func):
        raise StrategyError(f"partitioner {name!r} is not callable")
    return func  # type: ignore[no-any-return]


def check_partitioner(partitioner: Partitioner) -> None:
    """Probe a partitioner with a few keys and counts; StrategyError if it misbehaves
    (raises, returns a non-int, or a partition outside ``0..partitions-1``)."""
    for partitions in (1, 2, 7, 100):
        for key in (b"", b"user.1", "presence-\u00e9".encode()):
            try:
                p = partitioner(key, partitions)
            except Exception as exc:
                raise StrategyError(f"partitioner {partitioner!r} failed on key {key!r}, "
                                    f"{partitions} partitions: {exc!r}") from exc
            if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p < partitions:
                raise StrategyError(f"partitioner {partitioner!r} returned {p!r} for key "
                                    f"{key!r}; want an int in 0..{partitions - 1}")


def _grouped(settings: StrategySettings) -> TopicStrategy:
    rules = [TopicRule(m.pattern, m.topic, m.partitions,
                       m.replication_factor or settings.replication_factor, m.config)
             for m in settings.topic_mapping]
    default = TopicSpec(TopicName(settings.default_topic), settings.default_partitions,
                        settings.replication_factor)
    return GroupedTopics(rules, default, load_partitioner(settings.partitioner))


def _one_per_channel(settings: StrategySettings) -> TopicStrategy:
    return OneTopicPerChannel(settings.topic_prefix, settings.replication_factor)


STRATEGIES: dict[str, Callable[[StrategySettings], TopicStrategy]] = {
    "grouped": _grouped,
    "one-per-channel": _one_per_channel,
}


def create_strategy(settings: StrategySettings) -> TopicStrategy:
    """The strategy named by ``settings.topic_strategy`` (registry name or import path)."""
    name = settings.topic_strategy
    if name in STRATEGIES:
        strategy = STRATEGIES[name](settings)
    else:
        factory = _import(name, "topic strategy")
        if not callable(factory):
            raise StrategyError(f"topic strategy {name!r} is not callable")
        try:
            strategy = factory(settings)
        except Exception as exc:  # user code: report it as a bad strategy, not a crash
            raise StrategyError(f"topic strategy {name!r} failed to build: {exc!r}") from exc
    if not isinstance(strategy, TopicStrategy):
        raise StrategyError(f"topic strategy {name!r} does not implement TopicStrategy")
    return strategy
