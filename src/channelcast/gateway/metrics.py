"""Prometheus metrics of one gateway node, in its own registry, served at ``/metrics``.

Its own registry, so several apps can share a process (e.g. in tests).

Deliveries are counted in a plain int (:attr:`GatewayMetrics.delivered`, event-loop thread
only) and read when scraped: a ``Counter.inc()`` takes a lock, and at one per message per
client it showed up in the fan-out profile."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]


class _Deliveries(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily("channelcast_deliveries", "Messages queued to clients",
                                  value=self.metrics.delivered)


class _BrokerGauges(Collector):
    """What the broker itself holds, read when scraped: open fan-out subscriptions (one
    per hub feed when nothing leaks: compare with ``channelcast_broker_subscriptions``)
    and records of subscribed channels that carried no message."""

    def __init__(self, broker: object) -> None:
        self.broker = broker

    def collect(self) -> Iterable[Metric]:
        count = getattr(self.broker, "subscription_count", None)
        if callable(count):
            yield GaugeMetricFamily(
                "channelcast_broker_open_subscriptions",
                "Fan-out subscriptions open in the broker (a leak shows as more than "
                "channelcast_broker_subscriptions)", value=count())
        skipped = getattr(self.broker, "skipped_records", None)
        if isinstance(skipped, int):
            yield CounterMetricFamily(
                "channelcast_skipped_records",
                "Records of subscribed channels that carried no message (not UTF-8 JSON, "
                "no channel...), each logged with its topic:partition:offset",
                value=skipped)


class GatewayMetrics:
    def __init__(self) -> None:
        self.delivered = 0
        """Messages queued to clients; exported as the counter ``channelcast_deliveries``."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("channelcast_connections", "Open client connections",
                                 ["transport"], registry=r)
        for transport in ("ws", "sse"):  # a sample (0) from the start, not from the first
            self.connections.labels(transport)
        self.subscriptions = Gauge("channelcast_subscriptions",
                                   "Client subscriptions (one per connection and channel)",
                                   registry=r)
        self.broker_subscriptions = Gauge("channelcast_broker_subscriptions",
                                          "Broker subscriptions (one per channel per node)",
                                          registry=r)
        r.register(_Deliveries(self))
        self.drops = Counter("channelcast_drops",
                             "Messages dropped from full client send buffers", registry=r)
        self.slow_disconnects = Counter("channelcast_slow_client_disconnects",
                                        "Clients disconnected for a full send buffer",
                                        registry=r)
        self.header_timeouts = Counter("channelcast_request_header_timeouts",
                                       "HTTP connections closed for request headers not "
                                       "complete in time (slowloris)", registry=r)
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

    def watch_broker(self, broker: object) -> None:
        """Export the broker's own gauges (see :class:`_BrokerGauges`)."""
        self.registry.register(_BrokerGauges(broker))

    def render(self) -> bytes:
        return generate_latest(self.registry)
