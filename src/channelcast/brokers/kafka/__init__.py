"""The Kafka backend: with the benchmark package, the only code that imports confluent-kafka.

``KafkaBroker`` implements :class:`~channelcast.brokers.base.Broker`; ``from_settings``
is what ``create_broker`` calls for ``kafka://`` URLs.

Arrows run one way (``tests/unit/test_import_graph.py`` checks there is no cycle)::

    broker ──> fanout, worker, history, topics, producer
    worker ──> producer (its Outgoing message type)
    topics ──> admin
    fanout, worker, history, producer, reader ──> client (shared helpers)
    all of them ──> errors (the one map from Kafka failures to channelcast errors)

The broker wires the rest: subscriptions and workers get the narrow collaborators they
need (a topic ensurer, a history reader, the fan-out consumer, a dead-letter sender, a
registry) and never see the broker itself.
"""

from __future__ import annotations

from channelcast.brokers.kafka.broker import KafkaBroker, from_settings
from channelcast.brokers.kafka.fanout import KafkaSubscription
from channelcast.brokers.kafka.worker import KafkaWorker

__all__ = ["KafkaBroker", "KafkaSubscription", "KafkaWorker", "from_settings"]
