"""Broker backends, picked by URL scheme through a table of lazy imports.

``memory://`` is the embedded default; ``kafka://host:port[,host:port]`` is Apache Kafka
(the only place confluent-kafka is imported is :mod:`channelcast.brokers.kafka`).
Anything implementing :class:`Broker` can be passed in instead of a URL.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from channelcast.brokers.base import (
    Broker,
    ChannelRouter,
    Handler,
    RetryPolicy,
    Subscription,
    Worker,
    WorkerStats,
)
from channelcast.errors import ConfigError

if TYPE_CHECKING:
    from channelcast.config import Settings

__all__ = [
    "BACKENDS",
    "Broker",
    "ChannelRouter",
    "Handler",
    "RetryPolicy",
    "Subscription",
    "Worker",
    "WorkerStats",
    "create_broker",
]

BACKENDS: dict[str, str] = {
    "memory": "channelcast.brokers.memory:from_settings",
    "kafka": "channelcast.brokers.kafka:from_settings",
}


def create_broker(settings: Settings, url: str | None = None) -> Broker:
    """Build the broker for ``url`` (default ``settings.broker``); not started yet."""
    from channelcast.config import Settings as _Settings

    url = url or settings.broker
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in BACKENDS:
        raise ConfigError("broker", f"unknown broker URL {url!r} (known schemes: "
                          f"{', '.join(s + '://' for s in BACKENDS)})")
    if scheme == "kafka" and rest:
        settings = _Settings(broker=url, kafka=replace(settings.kafka, brokers=rest),
                             gateway=settings.gateway, source=settings.source)
    module_name, _, attr = BACKENDS[scheme].partition(":")
    factory: Any = getattr(importlib.import_module(module_name), attr)
    broker: Broker = factory(settings)
    return broker
