"""The librdkafka settings of a config, checked locally, before anything runs on them.

Owns :func:`check_client_settings` (``channelcast config check`` calls it): it builds a
producer and a consumer from exactly the settings the running broker would use (ours,
then ``kafka.producer`` / ``kafka.consumer``) and closes them at once. librdkafka checks
property names, values and combinations when a client is built, so a typo such as
``linger.mss`` is a ConfigError naming ``kafka.producer`` here rather than a failed
``channelcast serve`` later.

It never connects: the clients get no bootstrap server (the config checks the address
list itself), and their log lines go nowhere.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, Producer

from channelcast.brokers.kafka.client import private_consumer_config
from channelcast.brokers.kafka.errors import kafka_errors
from channelcast.brokers.kafka.producer import producer_defaults

if TYPE_CHECKING:
    from channelcast.config import KafkaSettings

__all__ = ["check_client_settings"]

_quiet = logging.getLogger("channelcast.kafka.settings_check")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def check_client_settings(settings: KafkaSettings) -> None:
    """Raise ConfigError (key ``kafka.producer`` or ``kafka.consumer``, librdkafka's words)
    if librdkafka refuses the producer or consumer settings; return None if it takes
    them. Takes a few milliseconds; opens no connection."""
    config = producer_defaults(settings.brokers, settings.timeout_s)
    config.update(settings.producer)
    config.update(_OFFLINE)
    with kafka_errors("checking the producer settings", settings="kafka.producer"):
        Producer(config).close()
    config = private_consumer_config(settings, "settings-check")
    config.update(_OFFLINE)
    with kafka_errors("checking the consumer settings", settings="kafka.consumer"):
        Consumer(config).close()


_OFFLINE = {"bootstrap.servers": "", "logger": _quiet}
"""Over the settings being checked: no bootstrap server, so the clients connect nowhere
(the address list itself is checked by the config, not by librdkafka), and no logging."""
