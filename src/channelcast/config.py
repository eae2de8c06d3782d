"""Settings: one validated object from a file (TOML or YAML) plus environment overrides.

Owns reading and checking configuration, once, at start-up. Every problem raises
:class:`~channelcast.errors.ConfigError` naming the key (``kafka.topic_mapping."user.*".partitions``
or the environment variable) and what is wrong. Nothing else in the package reads the
environment or config files, and no pydantic error leaves this module.

Environment overrides use the original's names: ``KAFKA_BROKERS``, ``KAFKA_TOPIC_STRATEGY``,
``KAFKA_TOPIC_PREFIX``, ``KAFKA_DEFAULT_TOPIC``, ``KAFKA_DEFAULT_PARTITIONS``,
``KAFKA_MANUAL_COMMIT``; plus ``CHANNELCAST_CONFIG`` (file path),
``CHANNELCAST_BROKER`` (``memory://`` or ``kafka://host:port,...``) and the default app's
``CHANNELCAST_APP_ID``, ``CHANNELCAST_APP_KEY``, ``CHANNELCAST_APP_SECRET``,
``CHANNELCAST_APP_CLIENT_EVENTS``, ``CHANNELCAST_APP_WEBHOOK_URL`` (``gateway.app_*``).

How: the settings are frozen dataclasses whose field annotations carry each key's checks;
pydantic validates into them, pydantic-settings layers the sources (defaults <- file <-
environment), and :func:`_config_error` is the one place a pydantic ``ValidationError``
becomes a ``ConfigError``. Checks across keys and the strategy/partitioner imports are in
:func:`validate`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    GetPydanticSchema,
    Strict,
    StringConstraints,
    ValidationError,
    with_config,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

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

KNOWN_STRATEGIES = ("grouped", "one-per-channel")

MAX_PARTITIONS = 10_000
"""Most partitions one topic may declare. Every partition is a log (segment and index
files, open file handles, memory) on each of its replicas, and a Kafka broker is
commonly sized for a few thousand partitions in all; a single topic with more than ten
thousand is past what a cluster handles well. The memory broker also builds every
partition up front, so a mistyped count would exhaust memory at start-up."""

_DECIMAL = re.compile(r"[+-]?[0-9]+")
_GLOB_CHARS = frozenset("*?[]!^")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


# --- what a key may hold: pydantic annotations plus channelcast's own checks -------------


def _problem(problem: str, at: str = "") -> PydanticCustomError:
    """A check's own wording, shown as is; ``at`` extends the key (``[0].pattern``)."""
    return PydanticCustomError("channelcast", "{problem}", {"problem": problem, "at": at})


def _decimal_text(value: object) -> object:
    # Environment values are text, and a file may quote numbers too. Only plain ASCII
    # decimals count: pydantic's lax mode would also take "1_000", int() non-ASCII digits.
    return int(value) if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()) else value


def _number_text(value: object) -> object:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _flag_text(value: object) -> object:
    word = value.strip().lower() if isinstance(value, str) else None
    return True if word in _TRUE else False if word in _FALSE else value


def _kafka_topic(name: str) -> TopicName:
    if len(name) > 249 or name in (".", "..") or any(
            not (c.isascii() and (c.isalnum() or c in "._-")) for c in name):
        raise _problem(f"{name!r} is not a valid Kafka topic name "
                       "(1-249 characters of A-Z a-z 0-9 . _ -)")
    return TopicName(name)


def _topic_prefix(prefix: str) -> str:
    longest = 249 - 1 - MAX_CHANNEL_LENGTH  # the topic is "{prefix}_{channel}"
    if len(prefix) > longest or any(
            not (c.isascii() and (c.isalnum() or c in "._-")) for c in prefix):
        raise _problem(f"{prefix!r} cannot start a Kafka topic name "
                       f"(1-{longest} characters of A-Z a-z 0-9 . _ -)")
    return prefix


def _host_port_problem(value: str) -> str | None:
    """What is wrong with a ``host:port[,host:port]`` list, or None."""
    for item in value.split(","):
        address = item.strip().split("://", 1)[-1]
        host, sep, port = address.rpartition(":")
        if not sep or not host or not _DECIMAL.fullmatch(port) or not 0 < int(port) < 65536:
            return (f"{item.strip()!r} is not host:port "
                    "(want host:port[,host:port], port 1-65535)")
    return None


def _host_ports(value: str) -> str:
    """Check a ``host:port[,host:port]`` list (librdkafka's ``bootstrap.servers``)."""
    problem = _host_port_problem(value)
    if problem is not None:
        raise _problem(problem)
    return value


def parse_bootstrap(value: str, key: str) -> str:
    """A bootstrap list given on the command line (``--bootstrap``, ``--brokers``) ->
    ``host:port[,host:port]``; a ``kafka://`` prefix (the form ``CHANNELCAST_BROKER``
    takes) is accepted and removed. Raises ConfigError naming ``key`` at once, instead of
    a client waiting out its timeout on an address it cannot parse."""
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme != "kafka":
            raise ConfigError(key, f"want host:port[,host:port] (or kafka://host:port), "
                              f"got {value!r}")
        text = rest
    problem = _host_port_problem(text) if text else "is empty"
    if problem is not None:
        raise ConfigError(key, problem)
    return ",".join(item.strip() for item in text.split(","))


def _partition_count(value: int) -> int:
    if value > MAX_PARTITIONS:
        raise _problem(f"must be <= {MAX_PARTITIONS:,} partitions (each is a log on every "
                       f"replica; more is past Kafka's practical limits), got {value}")
    return value


def _broker_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("memory", "kafka"):
        raise _problem(f"must be memory:// or kafka://host:port[,host:port], got {url!r}")
    if scheme == "kafka" and not rest:
        raise _problem("kafka:// needs at least one host:port")
    if scheme == "kafka":
        _host_ports(rest)
    return url


def _app_id(value: object) -> object:
    """An app id: digits (the Pusher SDKs refuse others); a number in a file counts."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and not (value.strip().isascii() and value.strip().isdigit()):
        raise _problem(f"must be digits (the Pusher SDKs require a numeric app id), "
                       f"got {value!r}")
    return value


_APP_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def _app_key(key: str) -> str:
    """An app key: it is a URL path segment (``/app/{key}``) and the part before ``:`` in
    every signature (``key:signature``), so only characters that are safe in both."""
    bad = next((c for c in key if c not in _APP_KEY_CHARS), None)
    if bad is not None:
        raise _problem(f"{key!r} has character {bad!r}; an app key is made of A-Z a-z 0-9 "
                       ". _ - only (it is the URL path segment of /app/{key} and the part "
                       "before ':' in signatures)")
    if len(key) > 200:
        raise _problem(f"is {len(key)} characters; an app key has at most 200")
    return key


def _http_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or rest.startswith("/"):
        raise _problem(f"must be an http:// or https:// URL, got {url!r}")
    return url


def _librdkafka_value(value: object) -> object:
    if not isinstance(value, str | int | float | bool):
        raise _problem("librdkafka settings must be scalars")
    return value


def _pattern(value: object, at: str) -> str:
    """A channel glob: channel characters plus glob syntax (``* ? [ ] ! ^``)."""
    if not isinstance(value, str) or not value:
        raise _problem(f"pattern must be a non-empty string, got {value!r}", at)
    for c in value:
        if c not in CHANNEL_CHARACTERS and c not in _GLOB_CHARS:
            raise _problem(f"pattern {value!r} has character {c!r}, which no channel name "
                           f"can contain (channels use {ALLOWED_CHARACTERS})", at)
    return value


def _by_pattern(value: object) -> dict[str, Any]:
    """The mapping as written (a table of pattern = row, or a YAML list of rows with a
    ``pattern``) -> ``{pattern: row}`` in order, so errors inside a row name its pattern."""
    rows: dict[str, Any] = {}
    if isinstance(value, dict):
        for pattern, row in value.items():
            rows[_pattern(pattern, f".{pattern}")] = row
    elif isinstance(value, list):
        for i, row in enumerate(value):
            if not isinstance(row, dict):
                raise _problem(f"must be a table/mapping, got {type(row).__name__}", f"[{i}]")
            if "pattern" not in row:
                raise _problem("is missing", f"[{i}].pattern")
            pattern = _pattern(row["pattern"], f"[{i}].pattern")
            if pattern in rows:
                raise _problem("pattern is declared twice", f'."{pattern}"')
            rows[pattern] = {k: v for k, v in row.items() if k != "pattern"}
    else:
        raise _problem("must be a table of pattern = {topic, partitions}")
    for pattern, row in rows.items():
        if not isinstance(row, dict):
            raise _problem(f"must be a table/mapping, got {type(row).__name__}", f'."{pattern}"')
        if "pattern" in row:
            raise _problem(f"unknown key (allowed: {_known(TopicMapping)})",
                           f'."{pattern}".pattern')
        rows[pattern] = {**row, "pattern": pattern}
    return rows


_Text = Annotated[str, Strict(), StringConstraints(strip_whitespace=True, min_length=1)]
_Int = Annotated[int, Strict(), BeforeValidator(_decimal_text)]
_Partitions = Annotated[_Int, Field(ge=1), AfterValidator(_partition_count)]
_Positive = Annotated[float, Strict(), Field(gt=0.0, allow_inf_nan=False),
                      BeforeValidator(_number_text)]
_Flag = Annotated[bool, Strict(), BeforeValidator(_flag_text)]
_Topic = Annotated[_Text, AfterValidator(_kafka_topic)]
_TopicName = Annotated[TopicName, Strict(), StringConstraints(strip_whitespace=True, min_length=1),
                       AfterValidator(_kafka_topic)]
_Librdkafka = Mapping[Annotated[str, Strict()], Annotated[Any, AfterValidator(_librdkafka_value)]]
_BrokerUrl = Annotated[_Text, AfterValidator(_broker_url)]
_AppId = Annotated[_Text, BeforeValidator(_app_id)]
_HttpUrl = Annotated[_Text, AfterValidator(_http_url)]
_AppKey = Annotated[_Text, AfterValidator(_app_key)]


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True, slots=True)
class TopicMapping:
    """One row of ``kafka.topic_mapping``: channels matching the glob ``pattern`` go to
    ``topic`` (``partitions``; ``replication_factor`` None means the section's)."""

    pattern: str
    topic: _TopicName
    partitions: _Partitions
    replication_factor: Annotated[_Int, Field(ge=1)] | None = None
    config: Mapping[Annotated[str, Strict()], Annotated[str, BeforeValidator(str)]] = field(
        default_factory=dict)


# Validated as {pattern: row} (see _by_pattern), kept as rows in their order.
_PatternTable = Annotated[
    tuple[TopicMapping, ...],
    GetPydanticSchema(lambda _type, handler: handler(dict[str, TopicMapping])),
    AfterValidator(lambda rows: tuple(rows.values())),
    BeforeValidator(_by_pattern),
]


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """The ``[kafka]`` section; each key, unit and range is in docs/configuration.md."""

    brokers: Annotated[_Text, AfterValidator(_host_ports)] = "127.0.0.1:19092"
    topic_strategy: _Text = "grouped"
    topic_prefix: Annotated[_Text, AfterValidator(_topic_prefix)] = "realtime"
    default_topic: _Topic = "realtime"
    default_partitions: _Partitions = 10
    replication_factor: Annotated[_Int, Field(ge=1)] = 1
    topic_mapping: _PatternTable = ()
    partitioner: _Text = "murmur2"
    manual_commit: _Flag = False
    dead_letter_topic: _Topic = "realtime.dlq"
    max_attempts: Annotated[_Int, Field(ge=1)] = 5
    retry_backoff_ms: Annotated[_Int, Field(ge=0)] = 100
    retry_backoff_max_ms: Annotated[_Int, Field(ge=0)] = 5000
    timeout_s: _Positive = 10.0
    max_message_bytes: Annotated[_Int, Field(ge=1024)] = 1_000_000
    producer: _Librdkafka = field(default_factory=dict)
    consumer: _Librdkafka = field(default_factory=dict)
    metadata_refresh_s: _Positive = 10.0


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """The ``[gateway]`` section; each key, unit and range is in docs/configuration.md."""

    host: _Text = "127.0.0.1"
    port: Annotated[_Int, Field(ge=0)] = 8000
    app_id: _AppId = "1"
    app_key: _AppKey = "channelcast-key"
    app_secret: _Text = "channelcast-secret"
    app_client_events: _Flag = False
    app_webhook_url: _HttpUrl | None = None
    max_subscriptions: Annotated[_Int, Field(ge=1)] = 100
    max_frame_bytes: Annotated[_Int, Field(ge=256)] = 65536
    send_queue: Annotated[_Int, Field(ge=1)] = 256
    slow_client_policy: _Text = "drop-oldest"
    presence_ttl_s: _Positive = 15.0
    history_size: Annotated[_Int, Field(ge=1)] = 10000
    history_bytes: Annotated[_Int, Field(ge=1024)] = 32 * 1024 * 1024
    demo: _Flag = False
    send_buffer_bytes: Annotated[_Int, Field(ge=0)] = 262144
    write_timeout_s: _Positive = 10.0
    compression: _Flag = False


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True, slots=True)
class PusherSettings:
    """The ``[pusher]`` section: the Pusher Channels protocol (docs/pusher.md); the limits
    apply to every app that does not set its own."""

    enabled: _Flag = True
    activity_timeout: Annotated[_Int, Field(ge=1)] = 30
    pong_timeout_s: _Positive = 30.0
    max_connections: Annotated[_Int, Field(ge=0)] = 0
    client_event_rate: Annotated[_Int, Field(ge=1)] = 10
    max_event_bytes: Annotated[_Int, Field(ge=1)] = 10240
    cache_lookback: Annotated[_Int, Field(ge=1)] = 1000
    max_user_info_bytes: Annotated[_Int, Field(ge=2)] = 1024
    webhook_group: _Text = "channelcast-pusher-webhooks"
    webhook_timeout_s: Annotated[_Positive, Field(le=60.0)] = 5.0
    webhook_max_attempts: Annotated[_Int, Field(ge=1, le=100)] = 10
    webhook_retry_backoff_s: Annotated[_Positive, Field(le=3600.0)] = 0.5
    webhook_retry_backoff_max_s: Annotated[_Positive, Field(le=3600.0)] = 30.0
    webhook_max_age_s: _Positive = 300.0


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True, slots=True)
class AppSettings:
    """One row of ``[[apps]]``: a Pusher app besides the default one (``gateway.app_*``).
    ``None`` limits take ``[pusher]``'s."""

    id: _AppId
    key: _AppKey
    secret: _Text
    client_events: _Flag = False
    webhook_url: _HttpUrl | None = None
    max_connections: Annotated[_Int, Field(ge=0)] | None = None
    client_event_rate: Annotated[_Int, Field(ge=1)] | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything channelcast reads at start-up; build it with :func:`load_settings`."""

    broker: str = "memory://"
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    source: str = "defaults"
    pusher: PusherSettings = field(default_factory=PusherSettings)
    apps: tuple[AppSettings, ...] = ()

    @property
    def broker_kind(self) -> str:
        return self.broker.split("://", 1)[0]

    def to_dict(self, *, redact: bool = False) -> dict[str, Any]:
        """Plain data (JSON-ready). ``redact=True`` masks secrets for printing: the
        gateway's ``app_secret``, each app's ``secret`` and librdkafka settings whose
        name contains ``password`` or ``secret``."""
        data = asdict(self)
        data["apps"] = list(data["apps"])
        data["kafka"]["topic_mapping"] = {
            m.pattern: {k: v for k, v in asdict(m).items()
                        if k != "pattern" and v not in (None, {})}
            for m in self.kafka.topic_mapping
        }
        if redact:
            data["gateway"]["app_secret"] = REDACTED
            for app in data["apps"]:
                app["secret"] = REDACTED
            for client in ("producer", "consumer"):
                data["kafka"][client] = {
                    k: REDACTED if any(w in k.lower() for w in ("password", "secret")) else v
                    for k, v in data["kafka"][client].items()}
        return data


REDACTED = "***"

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
ENV_GATEWAY = {
    "CHANNELCAST_APP_ID": "app_id",
    "CHANNELCAST_APP_KEY": "app_key",
    "CHANNELCAST_APP_SECRET": "app_secret",
    "CHANNELCAST_APP_CLIENT_EVENTS": "app_client_events",
    "CHANNELCAST_APP_WEBHOOK_URL": "app_webhook_url",
}
"""The default Pusher app is the gateway's own ``app_*`` (docs/pusher.md)."""
_SECTIONS: dict[str, type[Any]] = {"kafka": KafkaSettings, "gateway": GatewaySettings,
                                   "pusher": PusherSettings}
_ROWS: dict[str, type[Any]] = {**_SECTIONS, "apps": AppSettings}
"""What each top-level key's unknown-key errors list (``apps`` is a list of rows)."""


# --- sources: the file and the environment, layered by pydantic-settings -----------------


class _Environment(PydanticBaseSettingsSource):
    """The original's variable names onto keys (``KAFKA_DEFAULT_TOPIC`` ->
    ``kafka.default_topic``, ``CHANNELCAST_BROKER`` -> ``broker``); ``set_by`` remembers
    which variable set which key, for error messages."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        kafka = {key: env[var] for var, key in ENV_KAFKA.items() if var in env}
        self.set_by = {f"kafka.{key}": var for var, key in ENV_KAFKA.items() if var in env}
        self.values: dict[str, Any] = {"kafka": kafka} if kafka else {}
        gateway = {key: env[var] for var, key in ENV_GATEWAY.items() if var in env}
        if gateway:
            self.values["gateway"] = gateway
            self.set_by.update({f"gateway.{key}": var for var, key in ENV_GATEWAY.items()
                                if var in env})
        if "CHANNELCAST_BROKER" in env:
            self.values["broker"] = env["CHANNELCAST_BROKER"]
            self.set_by["broker"] = "CHANNELCAST_BROKER"

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.values


# settings_customise_sources is a classmethod with no per-call arguments; load_settings()
# hands it this call's file and environment here (a ContextVar: safe across threads/tasks).
_CALL_SOURCES: ContextVar[tuple[PydanticBaseSettingsSource, ...]] = ContextVar("sources")


class _Layered(BaseSettings):
    """File <- environment, merged key by key by pydantic-settings. Only the two sources
    load_settings() hands over count: pydantic-settings' own (``os.environ`` under the
    field names, ``.env`` files, secrets directories) are dropped."""

    model_config = SettingsConfigDict(extra="forbid", case_sensitive=True)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    pusher: PusherSettings = Field(default_factory=PusherSettings)
    apps: tuple[AppSettings, ...] = ()
    broker: _BrokerUrl = "memory://"

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return _CALL_SOURCES.get()


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML keeps the
    last silently, so a typo'd override would go unnoticed). Keys merged in with ``<<``
    may still be overridden: that is what merging is for."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[str, str], yaml.Mark] = {}
        for key_node, _value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            first = seen.setdefault((key_node.tag, key_node.value), key_node.start_mark)
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key_node.value!r} is written twice (first on line "
                    f"{first.line + 1}); remove one", key_node.start_mark)
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where (line, column of the file) and what."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return " ".join(str(exc).split())
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = exc.problem or "invalid YAML"
    context = f" ({exc.context})" if exc.context else ""
    return " ".join(f"{where}{what}{context}".split())


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
        data = tomllib.loads(text) if suffix == ".toml" else yaml.load(text, _UniqueKeyLoader)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(key, f"cannot parse config file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"cannot parse config file: {_yaml_problem(exc)}") from exc
    if data is None:  # an empty YAML file
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(key, "config file must hold a table/mapping at the top")
    return data


def _sections(raw: dict[Any, Any]) -> dict[str, Any]:
    """The file's top level: only known keys; sections are tables (YAML writes an empty
    ``kafka:`` as null, which means defaults)."""
    for key in raw:
        if not isinstance(key, str) or key not in ("broker", *_SECTIONS, "apps"):
            raise ConfigError(str(key), "unknown top-level key (known: broker, kafka, "
                              "gateway, pusher, apps)")
    for name in _SECTIONS:
        if name in raw and raw[name] is not None and not isinstance(raw[name], dict):
            raise ConfigError(name, f"must be a table/mapping, got {type(raw[name]).__name__}")
    if "apps" in raw and raw["apps"] is not None and not isinstance(raw["apps"], list):
        raise ConfigError("apps", "must be a list of tables ([[apps]] in TOML), got "
                          f"{type(raw['apps']).__name__}")
    return {k: v for k, v in raw.items()
            if v is not None or k not in (*_SECTIONS, "apps")}


# --- pydantic's errors -> ConfigError, in this one place ----------------------------------


def _known(cls: type[Any]) -> str:
    return ", ".join(f.name for f in fields(cls) if f.name != "pattern" or cls is not TopicMapping)


# pydantic error type -> channelcast's wording ({value}: the bad input; others from ctx).
_WORDING = {
    **dict.fromkeys(("int_type", "int_parsing", "int_from_float"),
                    "must be an integer, got {value!r}"),
    **dict.fromkeys(("float_type", "float_parsing"), "must be a number, got {value!r}"),
    "finite_number": "must be a finite number, got {value!r}",
    "greater_than_equal": "must be >= {ge}, got {value}",
    "greater_than": "must be > {gt}, got {value}",
    "less_than_equal": "must be <= {le}, got {value}",
    **dict.fromkeys(("bool_type", "bool_parsing"), "must be true or false, got {value!r}"),
    **dict.fromkeys(("string_type", "string_too_short"),
                    "must be a non-empty string, got {value!r}"),
    **dict.fromkeys(("dict_type", "mapping_type", "dataclass_type", "dataclass_args_type"),
                    "must be a table/mapping, got {type}"),
    "channelcast": "{problem}",
    "missing": "is missing",
    "tuple_type": "must be a list of tables, got {type}",
}
_MISSING = {"topic": "pattern has no topic", "partitions": "pattern has no partition count"}


def _config_error(exc: ValidationError) -> ConfigError:
    """The first error (in key order) as ``ConfigError(dotted key, problem)``."""
    error = exc.errors()[0]
    loc, kind, value = list(error["loc"]), error["type"], error["input"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    in_row = loc[1:2] == ["topic_mapping"]
    if loc and loc[-1] == "[key]":
        loc.pop()
        problem = f"keys must be strings, got {type(value).__name__}"
    elif kind in ("unexpected_keyword_argument", "extra_forbidden"):
        problem = (f"unknown key (allowed: {_known(TopicMapping)})" if in_row else
                   f"unknown key (known: {_known(_ROWS[str(loc[0])])})")
    elif kind == "missing" and in_row and loc[-1] in _MISSING:
        problem = _MISSING[str(loc[-1])]
    elif kind in _WORDING:
        problem = _WORDING[kind].format_map({**ctx, "value": value, "type": type(value).__name__})
    else:  # a check without wording of its own: pydantic's, plus the value
        problem = f"{error['msg']}, got {value!r}"
    key = "".join(f'."{part}"' if i > 0 and loc[i - 1] == "topic_mapping" else
                  f"[{part}]" if i == 1 and loc[0] == "apps" else f".{part}"
                  for i, part in enumerate(loc))
    return ConfigError(key[1:] + ctx.get("at", ""), problem)


def _blame_environment(exc: ConfigError, set_by: Mapping[str, str]) -> ConfigError:
    """Name the variable that set a key: as the key, or inside a cross-key problem."""
    # Only kafka.* keys appear inside problems (and a bare "broker" would match "brokers").
    mentioned = {k: v for k, v in set_by.items() if k.startswith("kafka.") and k in exc.problem}
    if exc.key not in set_by and not mentioned:
        return exc
    problem = exc.problem
    for dotted, var in mentioned.items():
        problem = problem.replace(dotted, f"{dotted} (set by {var})")
    return ConfigError(set_by.get(exc.key, exc.key), problem)


def load_settings(path: str | Path | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Defaults <- file (``path`` or ``$CHANNELCAST_CONFIG``) <- environment; validated.

    Environment variables set to the empty string count as unset. Raises
    :class:`ConfigError` naming the first bad key (or the variable, or the file).
    """
    env = {k: v for k, v in (os.environ if env is None else env).items() if v != ""}
    file_key = None
    if not path and env.get("CHANNELCAST_CONFIG"):
        path, file_key = env["CHANNELCAST_CONFIG"], "CHANNELCAST_CONFIG"
    raw = _sections(read_file(Path(path), file_key)) if path else {}
    environment = _Environment(_Layered, env)
    token = _CALL_SOURCES.set((environment, InitSettingsSource(_Layered, raw)))
    try:
        try:
            layered = _Layered()
        except ValidationError as exc:
            raise _config_error(exc) from exc
        finally:
            _CALL_SOURCES.reset(token)

        kafka, broker = layered.kafka, layered.broker
        # KAFKA_BROKERS selects Kafka, and overrides the hosts of a file's kafka:// URL; an
        # explicit memory:// stays, and CHANNELCAST_BROKER wins over both.
        if "KAFKA_BROKERS" in env and "CHANNELCAST_BROKER" not in env and (
                "broker" not in layered.model_fields_set or broker.startswith("kafka://")):
            broker = f"kafka://{kafka.brokers}"
        if broker.startswith("kafka://"):
            kafka = replace(kafka, brokers=broker.split("://", 1)[1])

        settings = Settings(broker=broker, kafka=kafka, gateway=layered.gateway,
                            source=str(path) if path else "defaults",
                            pusher=layered.pusher, apps=layered.apps)
        validate(settings)
    except ConfigError as exc:
        blamed = _blame_environment(exc, environment.set_by)
        if blamed is exc:
            raise
        raise blamed from exc
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
    p = settings.pusher
    if p.webhook_retry_backoff_max_s < p.webhook_retry_backoff_s:
        raise ConfigError("pusher.webhook_retry_backoff_max_s",
                          "must be >= pusher.webhook_retry_backoff_s")
    ids, keys = {g.app_id: "gateway.app_id"}, {g.app_key: "gateway.app_key"}
    for i, app in enumerate(settings.apps):
        if app.id in ids:
            raise ConfigError(f"apps[{i}].id", f"{app.id!r} is also the id at {ids[app.id]}")
        if app.key in keys:
            raise ConfigError(f"apps[{i}].key", f"{app.key!r} is also the key at "
                              f"{keys[app.key]}")
        ids[app.id], keys[app.key] = f"apps[{i}].id", f"apps[{i}].key"
