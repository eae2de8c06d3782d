"""Where the benchmark runs: the memory broker, or a Kafka cluster it is given.

Owns building a channelcast broker for a strategy's settings, creating and removing the
benchmark's own topics, and describing the machine. It never touches topics it did not
create, and never starts a broker: a private Kafka for a full run is the developer
script ``scripts/bench``'s job, outside the package.
"""

from __future__ import annotations

import asyncio
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from channelcast.bench.java import kafka_version
from channelcast.brokers import Broker, create_broker
from channelcast.config import KafkaSettings, Settings
from channelcast.strategies import TopicSpec, create_strategy


class Target(Protocol):
    """A place to run scenarios. ``bootstrap`` is None for the memory broker;
    ``kafka_libs`` is the folder of Kafka's jars for its Java tools, or None."""

    @property
    def url(self) -> str: ...

    @property
    def bootstrap(self) -> str | None: ...

    @property
    def kafka_libs(self) -> Path | None: ...

    def broker(self, kafka: KafkaSettings) -> Broker: ...

    async def provision(self, specs: Sequence[TopicSpec]) -> None: ...

    async def drop(self, names: Sequence[str]) -> None: ...


@dataclass
class MemoryTarget:
    url: str = "memory://"
    bootstrap: str | None = None
    kafka_libs: Path | None = None
    history_size: int = 200_000

    def broker(self, kafka: KafkaSettings) -> Broker:
        from channelcast.brokers.memory import MemoryBroker

        return MemoryBroker(create_strategy(kafka), history_size=self.history_size)

    async def provision(self, specs: Sequence[TopicSpec]) -> None:
        return None

    async def drop(self, names: Sequence[str]) -> None:
        return None


@dataclass
class KafkaTarget:
    bootstrap_servers: str
    producer: dict[str, Any] = field(default_factory=dict)
    consumer: dict[str, Any] = field(default_factory=dict)
    kafka_libs: Path | None = None
    """Kafka's jars, for the Java ceiling (``--kafka-libs``); None: that scenario is not run."""

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap_servers}"

    @property
    def bootstrap(self) -> str | None:
        return self.bootstrap_servers

    def broker(self, kafka: KafkaSettings) -> Broker:
        # A saturated single-node broker can hold a request longer than the default 10 s
        # publish timeout; the benchmark measures rate, so it waits longer before failing.
        kafka = replace(kafka, brokers=self.bootstrap_servers, timeout_s=max(kafka.timeout_s, 60.0),
                        producer={**kafka.producer, **self.producer},
                        consumer={**kafka.consumer, **self.consumer})
        return create_broker(Settings(broker=self.url, kafka=kafka))

    def ping(self, timeout_s: float = 10.0) -> None:
        """Fail fast (BrokerUnavailable) when the broker is not there, instead of once per
        scenario after its own timeouts."""
        from channelcast.bench import raw

        raw.ping(self.bootstrap_servers, timeout_s)

    async def provision(self, specs: Sequence[TopicSpec]) -> None:
        from channelcast.bench import raw

        await asyncio.to_thread(raw.create_topics, self.bootstrap_servers, list(specs))
        await asyncio.to_thread(raw.wait_writable, self.bootstrap_servers,
                                [(s.name, p) for s in specs for p in range(s.partitions)])

    async def drop(self, names: Sequence[str]) -> None:
        from channelcast.bench import raw

        await asyncio.to_thread(raw.delete_topics, self.bootstrap_servers, list(names))


# --- machine ---------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def describe_machine(target: Target) -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    info = {
        "cpus": str(os.cpu_count()),
        "cpu_model": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "broker": target.url,
    }
    if target.bootstrap is not None:
        from channelcast.bench import raw

        info["kafka"] = kafka_version(target.kafka_libs)
        info["confluent_kafka"] = raw.client_versions()
    return info
