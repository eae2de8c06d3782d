"""The configuration each server runs with in the peers benchmark: pure functions from a
port (and a Kafka topic) to the config document, written to a temp dir by the scenario.

Every server listens on 127.0.0.1 only, on the port it is given, and keeps its defaults
except where a setting says why it is changed. Read before writing these:

* Centrifugo v6 (``centrifugo defaultconfig``, ``centrifugo configdoc``): HTTP server
  and WebSocket endpoint ``/connection/websocket`` on one port; ``memory`` engine;
  anonymous connections without a token and subscriptions by any client to channels
  without a namespace (what a benchmark client without a token needs; both are off by
  default); the HTTP server API at ``/api`` with an API key (``X-API-Key``); WebSocket
  compression off (its default); anonymous usage stats off (a network call). With a
  Kafka topic: one ``consumers`` entry of type ``kafka`` in *publication data mode*
  (the record value is published as is into the channels named by the
  ``centrifugo-channels`` header), its own consumer group, other settings default
  (``fetch_max_wait`` 500 ms, ``max_poll_records`` 100).
* sockudo 5.2 (``ServerOptions`` in sockudo-core): the ``local`` adapter and ``memory``
  app manager and cache (one process, no Redis); one app (id, key, secret) in the
  config; the webhook queue ``none`` (its default is Redis); the rate limiter off (its
  default allows 20 WebSocket connections and 100 API requests per minute per IP, and
  every benchmark client comes from 127.0.0.1); the Prometheus metrics listener off
  (port 9601 by default); WebSocket compression ``disabled`` (its default).
* channelcast: ``channelcast serve`` with the broker it is given, the publish API's
  app key and secret, and a send queue that holds a whole burst (the benchmark measures
  delivery, not the drop policy), as the in-process fan-out scenario does.

Nothing here starts a process or opens a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CENTRIFUGO_CHANNELS_HEADER = "centrifugo-channels"
"""The Kafka header Centrifugo's publication data mode reads the target channels from."""


@dataclass(frozen=True, slots=True)
class PusherApp:
    """A Pusher app: the id in the HTTP API path, the key in the WebSocket path, the
    secret that signs API requests."""

    id: str = "bench"
    key: str = "bench-key"
    secret: str = "bench-secret"


def centrifugo_config(port: int, api_key: str, *, kafka_brokers: str | None = None,
                      kafka_topic: str | None = None,
                      consumer_group: str | None = None) -> dict[str, Any]:
    """Centrifugo's config (JSON document) for the benchmark; with ``kafka_topic``, its
    Kafka consumer in publication data mode reads that topic from ``kafka_brokers``
    (``HOST:PORT,...``) in ``consumer_group``."""
    origin = f"http://127.0.0.1:{port}"
    config: dict[str, Any] = {
        "http_server": {"address": "127.0.0.1", "port": port},
        "log": {"level": "error"},
        "engine": {"type": "memory"},
        "client": {"allow_anonymous_connect_without_token": True,
                   "allowed_origins": [origin]},
        "channel": {"without_namespace": {"allow_subscribe_for_client": True,
                                          "allow_subscribe_for_anonymous": True}},
        "http_api": {"key": api_key},
        "websocket": {"compression": False},
        "usage_stats": {"disabled": True},
    }
    if kafka_topic is not None:
        if not kafka_brokers or not consumer_group:
            raise ValueError("a Kafka consumer needs kafka_brokers and consumer_group")
        config["consumers"] = [{
            "name": "channelcast_bench",
            "enabled": True,
            "type": "kafka",
            "kafka": {
                "brokers": [b.strip() for b in kafka_brokers.split(",") if b.strip()],
                "topics": [kafka_topic],
                "consumer_group": consumer_group,
                "publication_data_mode": {"enabled": True,
                                          "channels_header": CENTRIFUGO_CHANNELS_HEADER},
            },
        }]
    return config


def sockudo_config(port: int, app: PusherApp) -> dict[str, Any]:
    """sockudo's config (JSON document) for the benchmark: one app, one process."""
    return {
        "host": "127.0.0.1",
        "port": port,
        "debug": False,
        "adapter": {"driver": "local"},
        "app_manager": {"driver": "memory", "array": {"apps": [
            {"id": app.id, "key": app.key, "secret": app.secret, "enabled": True}]}},
        "cache": {"driver": "memory"},
        "queue": {"driver": "none"},
        "rate_limiter": {"enabled": False},
        "metrics": {"enabled": False},
        "websocket": {"compression": "disabled"},
    }


def gateway_config(broker: str, *, app_key: str, app_secret: str, send_queue: int,
                   kafka_brokers: str | None = None, default_topic: str | None = None,
                   ) -> dict[str, Any]:
    """``channelcast serve``'s settings file (a YAML/TOML document) for the benchmark:
    ``broker`` is ``memory://`` or ``kafka://HOST:PORT``; on Kafka every channel goes to
    ``default_topic`` (the grouped strategy, one partition)."""
    config: dict[str, Any] = {
        "broker": broker,
        "gateway": {"host": "127.0.0.1", "app_key": app_key, "app_secret": app_secret,
                    "send_queue": send_queue, "demo": False},
    }
    if broker.startswith("kafka://"):
        if not kafka_brokers or not default_topic:
            raise ValueError("a kafka:// gateway needs kafka_brokers and default_topic")
        config["kafka"] = {"brokers": kafka_brokers, "topic_strategy": "grouped",
                           "default_topic": default_topic, "default_partitions": 1}
    return config
