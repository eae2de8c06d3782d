"""Where the benchmark runs: the memory broker, or a Kafka cluster (given or started).

Owns building a channelcast broker for a strategy's settings, creating and removing the
benchmark's own topics, finding ``scripts/kafka_local.py`` (for a private cluster and for
Kafka's Java tools) and describing the machine. It never touches topics it did not create.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from channelcast.brokers import Broker, create_broker
from channelcast.config import KafkaSettings, Settings
from channelcast.errors import BrokerUnavailable
from channelcast.strategies import TopicSpec, create_strategy

BENCH_CLUSTER_NAME = "bench"
BENCH_CLUSTER_PORT = 44092


class Target(Protocol):
    """A place to run scenarios. ``bootstrap`` is None for the memory broker."""

    @property
    def url(self) -> str: ...

    @property
    def bootstrap(self) -> str | None: ...

    def broker(self, kafka: KafkaSettings) -> Broker: ...

    async def provision(self, specs: Sequence[TopicSpec]) -> None: ...

    async def drop(self, names: Sequence[str]) -> None: ...


@dataclass
class MemoryTarget:
    url: str = "memory://"
    bootstrap: str | None = None
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


# --- scripts/kafka_local.py ----------------------------------------------------------


def find_kafka_local() -> Path:
    """scripts/kafka_local.py of this checkout (source tree or current directory)."""
    here = Path(__file__).resolve()
    candidates = [p / "scripts" / "kafka_local.py" for p in here.parents]
    candidates.append(Path.cwd() / "scripts" / "kafka_local.py")
    for path in candidates:
        if path.is_file():
            return path
    raise BrokerUnavailable("scripts/kafka_local.py not found: run from a channelcast checkout "
                            "(it provides the Kafka jars and private clusters)")


def kafka_local() -> ModuleType:
    """Import scripts/kafka_local.py by path (it is a script, not part of the package)."""
    cached = sys.modules.get("kafka_local")
    if cached is not None:
        return cached
    path = find_kafka_local()
    spec = importlib.util.spec_from_file_location("kafka_local", path)
    if spec is None or spec.loader is None:
        raise BrokerUnavailable(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafka_local"] = module
    spec.loader.exec_module(module)
    return module


class PrivateCluster:
    """A one-node Kafka the benchmark starts and stops itself (``--start-kafka``)."""

    def __init__(self, name: str = BENCH_CLUSTER_NAME, port: int = BENCH_CLUSTER_PORT) -> None:
        self.cluster: Any = kafka_local().Cluster(name=name, brokers=1, port=port)

    def start(self) -> str:
        try:
            self.cluster.stop()
            return str(self.cluster.start())
        except Exception as exc:
            raise BrokerUnavailable(f"could not start the private Kafka cluster: {exc}") from exc

    def stop(self) -> None:
        self.cluster.stop()


# --- machine ---------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def kafka_version() -> str:
    try:
        libs = Path(kafka_local().LIBS)
    except BrokerUnavailable:
        return "unknown"
    jars = sorted(libs.glob("kafka-clients-*.jar"))
    return jars[0].stem.removeprefix("kafka-clients-") if jars else "unknown"


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

        info["kafka"] = kafka_version()
        info["confluent_kafka"] = raw.client_versions()
    return info
