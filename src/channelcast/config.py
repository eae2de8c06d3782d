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

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from channelcast.channels import ALLOWED_CHARACTERS, CHANNEL_CHARACTERS, MAX_CHANNEL_LENGTH
from channelcast.errors import ConfigError, StrategyError
from channelcast.strategies import (
    PARTITIONERS,
    STRATEGIES,
    check_partitioner,
    create_strategy,
    load_partitioner,
)
from channelcast.types import TopicName

T = TypeVar("T")

KNOWN_STRATEGIES = ("grouped", "one-per-channel")

_DECIMAL = re.compile(r"[+-]?[0-9]+")
_GLOB_CHARS = frozenset("*?[]!^")


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
    send_buffer_bytes: int = 262144


@dataclass(frozen=True, slots=True)
class Settings:
    broker: str = "memory://"
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    source: str = "defaults"

    @property
    def broker_kind(self) -> str:
        return self.broker.split("://", 1)[0]

    def to_dict(self, *, redact: bool = False) -> dict[str, Any]:
        """Plain data (JSON-ready). ``redact=True`` masks secrets for printing: the
        gateway's ``app_secret`` and librdkafka settings whose name contains
        ``password`` or ``secret``."""
        data = asdict(self)
        data["kafka"]["topic_mapping"] = {
            m.pattern: {k: v for k, v in asdict(m).items()
                        if k != "pattern" and v not in (None, {})}
            for m in self.kafka.topic_mapping
        }
        if redact:
            data["gateway"]["app_secret"] = REDACTED
            for client in ("producer", "consumer"):
                data["kafka"][client] = {
                    k: REDACTED if any(w in k.lower() for w in ("password", "secret")) else v
                    for k, v in data["kafka"][client].items()}
        return data


REDACTED = "***"


# --- parsing helpers -----------------------------------------------------------------


def _int(key: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if isinstance(value, str):
        # Plain ASCII decimals only: int() would also take "1_000" and non-ASCII digits.
        if not _DECIMAL.fullmatch(value.strip()):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        value = int(value.strip())
    if not isinstance(value, int):
        raise ConfigError(key, f"must be an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ConfigError(key, f"must be >= {minimum}, got {value}")
    return value


def _float(key: str, value: object, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(key, f"must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(key, f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(key, f"must be a finite number, got {value!r}")
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
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(f"{key}.{k}", f"keys must be strings, got {type(k).__name__}")
    return value


def _section_table(key: str, value: object) -> dict[str, Any]:
    # YAML writes an empty section ("kafka:" with nothing under it) as null.
    return {} if value is None else _table(key, value)


def _topic(key: str, value: object) -> TopicName:
    name = _str(key, value)
    if len(name) > 249 or name in (".", "..") or any(
            not (c.isascii() and (c.isalnum() or c in "._-")) for c in name):
        raise ConfigError(key, f"{name!r} is not a valid Kafka topic name "
                               "(1-249 characters of A-Z a-z 0-9 . _ -)")
    return TopicName(name)


def _topic_prefix(key: str, value: object) -> str:
    prefix = _str(key, value)
    longest = 249 - 1 - MAX_CHANNEL_LENGTH  # the topic is "{prefix}_{channel}"
    if len(prefix) > longest or any(
            not (c.isascii() and (c.isalnum() or c in "._-")) for c in prefix):
        raise ConfigError(key, f"{prefix!r} cannot start a Kafka topic name "
                               f"(1-{longest} characters of A-Z a-z 0-9 . _ -)")
    return prefix


def _host_ports(key: str, value: str) -> str:
    """Check a ``host:port[,host:port]`` list (librdkafka's ``bootstrap.servers``)."""
    for item in value.split(","):
        address = item.strip().split("://", 1)[-1]
        host, sep, port = address.rpartition(":")
        if not sep or not host or not _DECIMAL.fullmatch(port) or not 0 < int(port) < 65536:
            raise ConfigError(key, f"{item.strip()!r} is not host:port "
                                   "(want host:port[,host:port], port 1-65535)")
    return value


def _brokers(key: str, value: object) -> str:
    return _host_ports(key, _str(key, value))


def _librdkafka(key: str, value: object) -> dict[str, Any]:
    table = _table(key, value)
    for k, v in table.items():
        if not isinstance(v, str | int | float | bool):
            raise ConfigError(f"{key}.{k}", "librdkafka settings must be scalars")
    return dict(table)


def _mapping(key: str, value: object) -> tuple[TopicMapping, ...]:
    rows: list[tuple[str, object]]
    if isinstance(value, dict):
        rows = [(_pattern(f"{key}.{p}", p), spec) for p, spec in value.items()]
    elif isinstance(value, list):
        rows = []
        for i, row in enumerate(value):
            row = _table(f"{key}[{i}]", row)
            if "pattern" not in row:
                raise ConfigError(f"{key}[{i}].pattern", "is missing")
            rows.append((_pattern(f"{key}[{i}].pattern", row["pattern"]),
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


def _pattern(key: str, value: object) -> str:
    """A channel glob: channel characters plus glob syntax (``* ? [ ] ! ^``)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"pattern must be a non-empty string, got {value!r}")
    for c in value:
        if c not in CHANNEL_CHARACTERS and c not in _GLOB_CHARS:
            raise ConfigError(key, f"pattern {value!r} has character {c!r}, which no channel"
                                   f" name can contain (channels use {ALLOWED_CHARACTERS})")
    return value


_KAFKA_PARSERS: dict[str, Callable[[str, object], Any]] = {
    "brokers": _brokers,
    "topic_strategy": _str,
    "topic_prefix": _topic_prefix,
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
    "send_buffer_bytes": lambda k, v: _int(k, v, 0),
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
    table = _section_table(name, raw)
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
    if scheme == "kafka":
        _host_ports(key, rest)
    return url


def read_file(path: Path, key: str | None = None) -> dict[str, Any]:
    """Parse a TOML or YAML file into a dict; errors name the file (and ``key``, the
    setting that named the file, when given)."""
    key = f"{key}={path}" if key else str(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(key, "config file must end in .toml, .yaml or .yml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(key, f"cannot read config file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(key, f"config file is not UTF-8 text: {exc}") from exc
    try:
        data = tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(key, f"cannot parse config file: {exc}") from exc
    if data is None:  # an empty YAML file
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(key, "config file must hold a table/mapping at the top")
    return data


def load_settings(path: str | Path | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Defaults <- file (``path`` or ``$CHANNELCAST_CONFIG``) <- environment; validated.

    Environment variables set to the empty string count as unset.
    """
    env = {k: v for k, v in (os.environ if env is None else env).items() if v != ""}
    file_key = None
    if not path and env.get("CHANNELCAST_CONFIG"):
        path, file_key = env["CHANNELCAST_CONFIG"], "CHANNELCAST_CONFIG"
    raw: dict[str, Any] = read_file(Path(path), file_key) if path else {}
    for key in raw:
        if not isinstance(key, str) or key not in ("broker", "kafka", "gateway"):
            raise ConfigError(str(key), "unknown top-level key (known: broker, kafka, gateway)")
    kafka_raw = dict(_section_table("kafka", raw.get("kafka")))
    from_env: dict[str, str] = {}  # dotted key -> the environment variable that set it
    for var, key in ENV_KAFKA.items():
        if var in env:
            kafka_raw[key] = env[var]
            from_env[f"kafka.{key}"] = var
    try:
        kafka = _section("kafka", kafka_raw, _KAFKA_PARSERS, KafkaSettings)
        gateway = _section("gateway", raw.get("gateway"), _GATEWAY_PARSERS, GatewaySettings)

        if "CHANNELCAST_BROKER" in env:
            broker = _broker_url("CHANNELCAST_BROKER", env["CHANNELCAST_BROKER"])
        elif "broker" in raw:
            broker = _broker_url("broker", raw["broker"])
            if broker.startswith("kafka://") and "KAFKA_BROKERS" in env:
                broker = f"kafka://{kafka.brokers}"  # the environment overrides the file
        elif "KAFKA_BROKERS" in env:
            broker = f"kafka://{kafka.brokers}"
        else:
            broker = "memory://"
        if broker.startswith("kafka://"):
            kafka = replace(kafka, brokers=broker.split("://", 1)[1])

        settings = Settings(broker=broker, kafka=kafka, gateway=gateway,
                            source=str(path) if path else "defaults")
        validate(settings)
    except ConfigError as exc:
        if exc.key in from_env or any(k in exc.problem for k in from_env):
            problem = exc.problem
            for dotted, var in from_env.items():
                problem = problem.replace(dotted, f"{dotted} (set by {var})")
            raise ConfigError(from_env.get(exc.key, exc.key), problem) from exc
        raise
    return settings


def validate(settings: Settings) -> None:
    """Cross-field checks that a single key's parser cannot see."""
    k = settings.kafka
    if k.topic_strategy not in STRATEGIES and ":" not in k.topic_strategy:
        raise ConfigError("kafka.topic_strategy", f"unknown strategy {k.topic_strategy!r} "
                          f"(known: {', '.join(STRATEGIES)}, or package.module:Name)")
    if k.partitioner not in PARTITIONERS and ":" not in k.partitioner:
        raise ConfigError("kafka.partitioner", f"unknown partitioner {k.partitioner!r} "
                          f"(known: {', '.join(PARTITIONERS)}, or package.module:function)")
    # Custom ones are imported (and built) now, so a bad import path fails at start-up.
    try:
        check_partitioner(load_partitioner(k.partitioner))
    except StrategyError as exc:
        raise ConfigError("kafka.partitioner", str(exc)) from exc
    try:
        create_strategy(k)
    except StrategyError as exc:
        raise ConfigError("kafka.topic_strategy", str(exc)) from exc
    if k.retry_backoff_max_ms < k.retry_backoff_ms:
        raise ConfigError("kafka.retry_backoff_max_ms", "must be >= kafka.retry_backoff_ms")
    declared: dict[str, tuple[int, str]] = {
        k.default_topic: (k.default_partitions, "kafka.default_partitions")}
    named_at = {k.default_topic: "kafka.default_topic"}  # topic -> the key that names it
    for m in k.topic_mapping:
        where = f'kafka.topic_mapping."{m.pattern}".partitions'
        if m.topic in declared and declared[m.topic][0] != m.partitions:
            count, other = declared[m.topic]
            raise ConfigError(where, f"topic {m.topic!r} is declared with {m.partitions} "
                              f"partitions here and {count} at {other}")
        declared.setdefault(m.topic, (m.partitions, where))
        named_at.setdefault(m.topic, f'kafka.topic_mapping."{m.pattern}".topic')
    if k.dead_letter_topic in declared:
        raise ConfigError("kafka.dead_letter_topic",
                          f"{k.dead_letter_topic!r} is also a data topic (at "
                          f"{named_at[k.dead_letter_topic]}); pick another name")
    g = settings.gateway
    if g.slow_client_policy not in ("drop-oldest", "disconnect"):
        raise ConfigError("gateway.slow_client_policy",
                          f"must be drop-oldest or disconnect, got {g.slow_client_policy!r}")
    if not 0 < g.port < 65536 and g.port != 0:
        raise ConfigError("gateway.port", f"must be 0..65535, got {g.port}")

