"""Prometheus metrics of one gateway, in its own registry (so several apps can share a
process, e.g. in tests). Served at ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("channelcast_connections", "Open client connections",
                                 ["transport"], registry=r)
        self.subscriptions = Gauge("channelcast_subscriptions",
                                   "Client subscriptions (one per connection and channel)",
                                   registry=r)
        self.broker_subscriptions = Gauge("channelcast_broker_subscriptions",
                                          "Broker subscriptions (one per channel per node)",
                                          registry=r)
        self.deliveries = Counter("channelcast_deliveries",
                                  "Messages queued to clients", registry=r)
        self.drops = Counter("channelcast_drops",
                             "Messages dropped from full client send buffers", registry=r)
        self.slow_disconnects = Counter("channelcast_slow_client_disconnects",
                                        "Clients disconnected for a full send buffer",
                                        registry=r)
        self.publishes = Counter("channelcast_publishes", "Messages published via the HTTP API",
                                 registry=r)
        self.publish_latency = Histogram(
            "channelcast_publish_latency_seconds", "HTTP publish: until the broker acknowledged",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r)
        self.errors = Counter("channelcast_protocol_errors", "Error frames sent to clients",
                              ["code"], registry=r)
        self.recoveries = Counter("channelcast_recoveries", "Subscriptions with a position",
                                  ["result"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
