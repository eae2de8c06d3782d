"""channelcast: realtime broadcasting for Python, with Apache Kafka as its backbone.

Publish ``(channel, event, data)``; browsers (WebSocket, SSE) and server-side workers
receive it. The names below are the public API; everything else is reachable through its
module (``channelcast.gateway``, ``channelcast.ops``, ...). This module only re-exports:
importing it never connects anywhere and never imports confluent-kafka.
"""

from __future__ import annotations

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
