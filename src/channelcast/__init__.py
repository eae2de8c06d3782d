"""channelcast: realtime broadcasting for Python, with Apache Kafka as its backbone.

Publish ``(channel, event, data)``; browsers (WebSocket, SSE) and server-side workers
receive it. The names below are the public API; everything else is reachable through its
module (``channelcast.gateway``, ``channelcast.ops``, ...). This module only re-exports:
importing it never connects anywhere and never imports confluent-kafka.

The re-exports are lazy (PEP 562): ``from channelcast import Broker`` imports the brokers
module then, not ``import channelcast``. So a command that needs none of them (say,
``channelcast --version``) does not pay for pydantic, the config and the brokers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channelcast.brokers import Broker, Subscription, Worker, create_broker
    from channelcast.config import Settings, load_settings
    from channelcast.errors import ChannelcastError
    from channelcast.message import Envelope, Record
    from channelcast.types import ChannelName, Position, TopicName

__all__ = [
    "Broker",
    "ChannelName",
    "ChannelcastError",
    "Envelope",
    "Position",
    "Record",
    "Settings",
    "Subscription",
    "TopicName",
    "Worker",
    "create_broker",
    "load_settings",
]

_HOME = {
    "Broker": "channelcast.brokers", "Subscription": "channelcast.brokers",
    "Worker": "channelcast.brokers", "create_broker": "channelcast.brokers",
    "Settings": "channelcast.config", "load_settings": "channelcast.config",
    "ChannelcastError": "channelcast.errors",
    "Envelope": "channelcast.message", "Record": "channelcast.message",
    "ChannelName": "channelcast.types", "Position": "channelcast.types",
    "TopicName": "channelcast.types",
}
"""Where each public name lives (one entry per name in ``__all__``)."""


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'channelcast' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
