"""Settings: one validated object from a file (TOML or YAML) plus environment overrides.

Owns reading and checking configuration, once, at start-up. Every problem raises
:class:`~channelcast.errors.ConfigError` naming the key (``kafka.topic_mapping."user.*".partitions``
or the environment variable) and what is wrong. Nothing else in the package reads the
environment or config files.

Environment overrides use the original's names: ``KAFKA_BROKERS``, ``KAFKA_TOPIC_STRATEGY``,
``KAFKA_TOPIC_PREFIX``, ``KAFKA_DEFAULT_TOPIC``, ``KAFKA_DEFAULT_PARTITIONS``,
``KAFKA_MANUAL_COMMIT``; plus ``CHANNELCAST_CONFIG`` (file path) and
``CHANNELCAST_BROKER`` (``memory://`` or ``kafka://host:port,...``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from channelcast.errors import ConfigError
from channelcast.types import TopicName

T = TypeVar("T")

KNOWN_STRATEGIES = ("grouped", "one-per-channel")


@dataclass(frozen=True, slots=True)
class TopicMapping:
    pattern: str
    topic: TopicName
    partitions: int
    replication_factor: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    brokers: str = "127.0.0.1:19092"
    topic_strategy: str = "grouped"
    topic_prefix: str = "realtime"
    default_topic: str = "realtime"
    default_partitions: int = 10
    replication_factor: int = 1
    topic_mapping: tuple[TopicMapping, ...] = ()
    partitioner: str = "murmur2"
    manual_commit: bool = False
    dead_letter_topic: str = "realtime.dlq"
    max_attempts: int = 5
    retry_backoff_ms: int = 100
    retry_backoff_max_ms: int = 5000
    timeout_s: float = 10.0
    max_message_bytes: int = 1_000_000
    producer: Mapping[str, Any] = field(default_factory=dict)
    consumer: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8000
    app_id: str = "channelcast"
    app_key: str = "channelcast-key"
    app_secret: str = "channelcast-secret"
    max_subscriptions: int = 100
    max_frame_bytes: int = 65536
    send_queue: int = 256
    slow_client_policy: str = "drop-oldest"
    presence_ttl_s: float = 15.0
    history_size: int = 10000
    demo: bool = True


@dataclass(frozen=True, slots=True)
class Settings:
    broker: str = "memory://"
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    source: str = "defaults"

    @property
    def broker_kind(self) -> str:
        return self.broker.split("://", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kafka"]["topic_mapping"] = {
            m.pattern: {k: v for k, v in asdict(m).items()
                        if k != "pattern" and v not in (None, {})}
            for m in self.kafka.topic_mapping
        }
        return data


# --- parsing helpers -----------------------------------------------------------------


def _int(key: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(key, f"must be an integer, got {value!r}") from None
    if not isinstance(value, int):
        raise ConfigError(key, f"must be an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ConfigError(key, f"must be >= {minimum}, got {value}")
    return value


def _float(key: str, value: object, minimum: float = 0.0) -> float:
    if isinstance(value, bool):
        raise ConfigError(key, f"must be a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a number, got {value!r}") from None
    if number <= minimum:
        raise ConfigError(key, f"must be > {minimum}, got {number}")
    return number


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(key, f"must be true or false, got {value!r}")


def _str(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"must be a non-empty string, got {value!r}")
    return value.strip()


def _table(key: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a table/mapping, got {type(value).__name__}")
    return value


def _topic(key: str, value: object) -> TopicName:
    name = _str(key, value)
    if len(name) > 249 or name in (".", "..") or any(
            not (c.isascii() and (c.isalnum() or c in "._-")) for c in name):
        raise ConfigError(key, f"{name!r} is not a valid Kafka topic name "
                               "(1-249 characters of A-Z a-z 0-9 . _ -)")
    return TopicName(name)


def _librdkafka(key: str, value: object) -> dict[str, Any]:
    table = _table(key, value)
    for k, v in table.items():
        if not isinstance(v, str | int | float | bool):
            raise ConfigError(f"{key}.{k}", "librdkafka settings must be scalars")
    return dict(table)


def _mapping(key: str, value: object) -> tuple[TopicMapping, ...]:
    rows: list[tuple[str, object]]
    if isinstance(value, dict):
        rows = list(value.items())
    elif isinstance(value, list):
        rows = []
        for i, row in enumerate(value):
            row = _table(f"{key}[{i}]", row)
            if "pattern" not in row:
                raise ConfigError(f"{key}[{i}].pattern", "is missing")
            rows.append((_str(f"{key}[{i}].pattern", row["pattern"]),
                         {k: v for k, v in row.items() if k != "pattern"}))
    else:
        raise ConfigError(key, "must be a table of pattern = {topic, partitions}")
    out: list[TopicMapping] = []
    seen: set[str] = set()
    for pattern, spec in rows:
        pkey = f'{key}."{pattern}"'
        if not pattern:
            raise ConfigError(pkey, "pattern must not be empty")
        if pattern in seen:
            raise ConfigError(pkey, "pattern is declared twice")
        seen.add(pattern)
        spec = _table(pkey, spec)
        unknown = set(spec) - {"topic", "partitions", "replication_factor", "config"}
        if unknown:
            raise ConfigError(f"{pkey}.{sorted(unknown)[0]}", "unknown key "
                              "(allowed: topic, partitions, replication_factor, config)")
        if "topic" not in spec:
            raise ConfigError(f"{pkey}.topic", "pattern has no topic")
        if "partitions" not in spec:
            raise ConfigError(f"{pkey}.partitions", "pattern has no partition count")
        rf = spec.get("replication_factor")
        out.append(TopicMapping(
            pattern=pattern,
            topic=_topic(f"{pkey}.topic", spec["topic"]),
            partitions=_int(f"{pkey}.partitions", spec["partitions"], 1),
            replication_factor=None if rf is None else _int(f"{pkey}.replication_factor", rf, 1),
            config={str(k): str(v) for k, v in _table(f"{pkey}.config",
                                                      spec.get("config", {})).items()},
        ))
    return tuple(out)


_KAFKA_PARSERS: dict[str, Callable[[str, object], Any]] = {
    "brokers": _str,
    "topic_strategy": _str,
    "topic_prefix": _str,
    "default_topic": _topic,
    "default_partitions": lambda k, v: _int(k, v, 1),
    "replication_factor": lambda k, v: _int(k, v, 1),
    "topic_mapping": _mapping,
    "partitioner": _str,
    "manual_commit": _bool,
    "dead_letter_topic": _topic,
    "max_attempts": lambda k, v: _int(k, v, 1),
    "retry_backoff_ms": lambda k, v: _int(k, v, 0),
    "retry_backoff_max_ms": lambda k, v: _int(k, v, 0),
    "timeout_s": _float,
    "max_message_bytes": lambda k, v: _int(k, v, 1024),
    "producer": _librdkafka,
    "consumer": _librdkafka,
}

_GATEWAY_PARSERS: dict[str, Callable[[str, object], Any]] = {
    "host": _str,
    "port": lambda k, v: _int(k, v, 0),
    "app_id": _str,
    "app_key": _str,
    "app_secret": _str,
    "max_subscriptions": lambda k, v: _int(k, v, 1),
    "max_frame_bytes": lambda k, v: _int(k, v, 256),
    "send_queue": lambda k, v: _int(k, v, 1),
    "slow_client_policy": _str,
    "presence_ttl_s": _float,
    "history_size": lambda k, v: _int(k, v, 1),
    "demo": _bool,
}

ENV_KAFKA = {
    "KAFKA_BROKERS": "brokers",
    "KAFKA_TOPIC_STRATEGY": "topic_strategy",
    "KAFKA_TOPIC_PREFIX": "topic_prefix",
    "KAFKA_DEFAULT_TOPIC": "default_topic",
    "KAFKA_DEFAULT_PARTITIONS": "default_partitions",
    "KAFKA_MANUAL_COMMIT": "manual_commit",
    "KAFKA_DEAD_LETTER_TOPIC": "dead_letter_topic",
    "KAFKA_PARTITIONER": "partitioner",
}


def _section(name: str, raw: object, parsers: Mapping[str, Callable[[str, object], Any]],
             cls: Callable[..., T]) -> T:
    table = _table(name, raw)
    values = {}
    for key, value in table.items():
        if key not in parsers:
            raise ConfigError(f"{name}.{key}", f"unknown key (known: {', '.join(parsers)})")
        values[key] = parsers[key](f"{name}.{key}", value)
    return cls(**values)


def _broker_url(key: str, value: object) -> str:
    url = _str(key, value)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("memory", "kafka"):
        raise ConfigError(key, f"must be memory:// or kafka://host:port[,host:port], got {url!r}")
    if scheme == "kafka" and not rest:
        raise ConfigError(key, "kafka:// needs at least one host:port")
    return url


def read_file(path: Path) -> dict[str, Any]:
    """Parse a TOML or YAML file into a dict; errors name the file."""
    key = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(key, f"cannot read config file: {exc.strerror or exc}") from exc
    try:
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(key, "config file must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(key, f"cannot parse config file: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(key, "config file must hold a table/mapping at the top")
    return data


def load_settings(path: str | Path | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Defaults <- file (``path`` or ``$CHANNELCAST_CONFIG``) <- environment; validated."""
    env = os.environ if env is None else env
    path = path or env.get("CHANNELCAST_CONFIG") or None
    raw: dict[str, Any] = read_file(Path(path)) if path else {}
    unknown = set(raw) - {"broker", "kafka", "gateway"}
    if unknown:
        raise ConfigError(sorted(unknown)[0],
                          "unknown top-level key (known: broker, kafka, gateway)")
    kafka_raw = dict(_table("kafka", raw.get("kafka", {})))
    for var, key in ENV_KAFKA.items():
        if var in env:
            kafka_raw[key] = env[var]
    try:
        kafka = _section("kafka", kafka_raw, _KAFKA_PARSERS, KafkaSettings)
    except ConfigError as exc:
        env_var = next((v for v, k in ENV_KAFKA.items()
                        if exc.key == f"kafka.{k}" and v in env), None)
        if env_var:
            raise ConfigError(env_var, exc.problem) from None
        raise
    gateway = _section("gateway", raw.get("gateway", {}), _GATEWAY_PARSERS, GatewaySettings)

    broker_key = "CHANNELCAST_BROKER" if "CHANNELCAST_BROKER" in env else "broker"
    if broker_key in env:
        broker = _broker_url(broker_key, env[broker_key])
    elif "broker" in raw:
        broker = _broker_url("broker", raw["broker"])
    elif "KAFKA_BROKERS" in env:
        broker = f"kafka://{kafka.brokers}"
    else:
        broker = "memory://"
    if broker.startswith("kafka://"):
        kafka = replace(kafka, brokers=broker.split("://", 1)[1])

    settings = Settings(broker=broker, kafka=kafka, gateway=gateway,
                        source=str(path) if path else "defaults")
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Cross-field checks that a single key's parser cannot see."""
    k = settings.kafka
    from channelcast.strategies import PARTITIONERS, STRATEGIES

    if k.topic_strategy not in STRATEGIES and ":" not in k.topic_strategy:
        raise ConfigError("kafka.topic_strategy", f"unknown strategy {k.topic_strategy!r} "
                          f"(known: {', '.join(STRATEGIES)}, or package.module:Name)")
    if k.partitioner not in PARTITIONERS and ":" not in k.partitioner:
        raise ConfigError("kafka.partitioner", f"unknown partitioner {k.partitioner!r} "
                          f"(known: {', '.join(PARTITIONERS)}, or package.module:function)")
    if k.retry_backoff_max_ms < k.retry_backoff_ms:
        raise ConfigError("kafka.retry_backoff_max_ms", "must be >= kafka.retry_backoff_ms")
    declared: dict[str, tuple[int, str]] = {
        k.default_topic: (k.default_partitions, "kafka.default_partitions")}
    for m in k.topic_mapping:
        where = f'kafka.topic_mapping."{m.pattern}".partitions'
        if m.topic in declared and declared[m.topic][0] != m.partitions:
            count, other = declared[m.topic]
            raise ConfigError(where, f"topic {m.topic!r} is declared with {m.partitions} "
                              f"partitions here and {count} at {other}")
        declared.setdefault(m.topic, (m.partitions, where))
    if k.dead_letter_topic in declared:
        raise ConfigError("kafka.dead_letter_topic",
                          f"{k.dead_letter_topic!r} is also a data topic; pick another name")
    g = settings.gateway
    if g.slow_client_policy not in ("drop-oldest", "disconnect"):
        raise ConfigError("gateway.slow_client_policy",
                          f"must be drop-oldest or disconnect, got {g.slow_client_policy!r}")
    if not 0 < g.port < 65536 and g.port != 0:
        raise ConfigError("gateway.port", f"must be 0..65535, got {g.port}")

