"""The Kafka backend: the only package that imports confluent-kafka.

``KafkaBroker`` implements :class:`~channelcast.brokers.base.Broker`; ``from_settings``
is what ``create_broker`` calls for ``kafka://`` URLs. confluent-kafka errors are
translated in :mod:`channelcast.brokers.kafka.errors` and nowhere else.
"""

from __future__ import annotations

from channelcast.brokers.kafka.broker import KafkaBroker, from_settings
from channelcast.brokers.kafka.fanout import KafkaSubscription
from channelcast.brokers.kafka.worker import KafkaWorker

__all__ = ["KafkaBroker", "KafkaSubscription", "KafkaWorker", "from_settings"]
