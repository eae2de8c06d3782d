"""Settings from a TOML/YAML file plus environment overrides; every error names its key."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from importlib import resources
from pathlib import Path

import pytest
import yaml

from channelcast.config import (
    ENV_GATEWAY,
    ENV_KAFKA,
    REDACTED,
    AppSettings,
    GatewaySettings,
    KafkaSettings,
    PusherSettings,
    Settings,
    TopicMapping,
    load_settings,
)
from channelcast.errors import ChannelcastError, ConfigError
from channelcast.types import TopicName

EXAMPLE = resources.files("channelcast") / "examples" / "channelcast.toml"
HERE = __name__


def toml_file(tmp_path: Path, text: str, name: str = "channelcast.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error(path: Path | None = None, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env or {})
    return info.value


def example() -> Settings:
    with resources.as_file(EXAMPLE) as path:
        return load_settings(path, env={})


# --- the shipped example ------------------------------------------------------------------


def test_example_mirrors_the_original() -> None:
    s = example()
    assert s.broker == "memory://"
    k = s.kafka
    assert (k.topic_strategy, k.topic_prefix, k.default_topic, k.default_partitions) == (
        "grouped", "realtime", "realtime", 10)
    assert k.manual_commit is False
    assert k.partitioner == "murmur2"
    assert k.topic_mapping == (
        TopicMapping("user.*", TopicName("realtime.user"), 10),
        TopicMapping("public.*", TopicName("realtime.public"), 3),
    )


def test_shipped_yaml_example_equals_the_toml_one() -> None:
    yaml_example = resources.files("channelcast") / "examples" / "channelcast.yaml"
    with resources.as_file(yaml_example) as path:
        s = load_settings(path, env={})
    assert dataclasses.replace(s, source="") == dataclasses.replace(example(), source="")


@pytest.mark.parametrize("name", ["UPPER.TOML", "Mixed.Yml", "x.YAML"])
def test_file_suffix_is_case_insensitive(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("kafka = {default_partitions = 7}\n" if name.lower().endswith(".toml")
                    else "kafka: {default_partitions: 7}\n")
    assert load_settings(path, env={}).kafka.default_partitions == 7


def test_defaults_without_a_file() -> None:
    s = load_settings(None, env={})
    assert s == Settings()
    assert s.source == "defaults"
    assert s.broker_kind == "memory"


def test_yaml_file_gives_the_same_settings_as_toml(tmp_path: Path) -> None:
    path = tmp_path / "channelcast.yaml"
    path.write_text(textwrap.dedent("""\
        broker: memory://
        kafka:
          topic_strategy: grouped
          topic_mapping:
            user.*: {topic: realtime.user, partitions: 10}
            public.*:
              topic: realtime.public
              partitions: 3
        gateway:
          host: 127.0.0.1
          port: 8000
        """))
    s = load_settings(path, env={})
    assert s.kafka == example().kafka
    assert s.source == str(path)


def test_yaml_list_form_of_the_mapping_keeps_its_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(textwrap.dedent("""\
        kafka:
          topic_mapping:
            - {pattern: "user.vip.*", topic: realtime.vip, partitions: 2}
            - {pattern: "user.*", topic: realtime.user, partitions: 10}
        """))
    mapping = load_settings(path, env={}).kafka.topic_mapping
    assert [m.pattern for m in mapping] == ["user.vip.*", "user.*"]


def test_empty_yaml_file_and_empty_sections_mean_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_settings(empty, env={}).kafka == KafkaSettings()
    sections = tmp_path / "sections.yaml"
    sections.write_text("kafka:\ngateway:\n")
    assert load_settings(sections, env={}).kafka == KafkaSettings()


def test_resolved_dict_loads_back_to_the_same_settings(tmp_path: Path) -> None:
    original = example()
    data = original.to_dict()
    assert data["kafka"]["topic_mapping"]["user.*"] == {"topic": "realtime.user",
                                                        "partitions": 10}
    del data["source"]
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))  # mapping order matters
    assert dataclasses.replace(load_settings(path, env={}), source="x") == dataclasses.replace(
        original, source="x")


def test_redacted_dict_hides_secrets_only(tmp_path: Path) -> None:
    path = toml_file(tmp_path, """\
        [kafka.producer]
        "sasl.password" = "hunter2"
        "ssl.key.password" = "k"
        "sasl.oauthbearer.client.secret" = "s"
        "linger.ms" = 5
        [gateway]
        app_secret = "topsecret"
        """)
    s = load_settings(path, env={})
    plain, redacted = s.to_dict(), s.to_dict(redact=True)
    assert plain["gateway"]["app_secret"] == "topsecret"
    assert redacted["gateway"]["app_secret"] == REDACTED
    assert redacted["kafka"]["producer"] == {
        "sasl.password": REDACTED, "ssl.key.password": REDACTED,
        "sasl.oauthbearer.client.secret": REDACTED, "linger.ms": 5}
    assert "hunter2" not in repr(redacted)


# --- environment overrides ------------------------------------------------------------------


def test_environment_overrides_the_file_with_the_originals_names() -> None:
    env = {"KAFKA_TOPIC_STRATEGY": "one-per-channel", "KAFKA_TOPIC_PREFIX": "legacy",
           "KAFKA_DEFAULT_TOPIC": "events", "KAFKA_DEFAULT_PARTITIONS": "12",
           "KAFKA_MANUAL_COMMIT": "true", "KAFKA_PARTITIONER": "crc32",
           "KAFKA_DEAD_LETTER_TOPIC": "events.dlq"}
    with resources.as_file(EXAMPLE) as path:
        k = load_settings(path, env=env).kafka
    assert (k.topic_strategy, k.topic_prefix, k.default_topic, k.default_partitions,
            k.manual_commit, k.partitioner, k.dead_letter_topic) == (
        "one-per-channel", "legacy", "events", 12, True, "crc32", "events.dlq")
    assert len(k.topic_mapping) == 2  # the file's mapping stays


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("true", True), ("YES", True), ("on", True),
    ("0", False), ("false", False), ("No", False), ("off", False),
])
def test_manual_commit_accepts_the_usual_booleans(value: str, expected: bool) -> None:
    assert load_settings(None, env={"KAFKA_MANUAL_COMMIT": value}).kafka.manual_commit is expected


def test_empty_environment_variables_count_as_unset() -> None:
    with resources.as_file(EXAMPLE) as path:
        s = load_settings(path, env={var: "" for var in ENV_KAFKA} | {"CHANNELCAST_BROKER": ""})
    assert s == example()


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = toml_file(tmp_path, '[kafka]\ndefault_topic = "fromenv"\n')
    s = load_settings(None, env={"CHANNELCAST_CONFIG": str(path)})
    assert (s.kafka.default_topic, s.source) == ("fromenv", str(path))


def test_kafka_brokers_alone_selects_kafka() -> None:
    s = load_settings(None, env={"KAFKA_BROKERS": "k1:9092,k2:9092"})
    assert s.broker == "kafka://k1:9092,k2:9092"
    assert s.kafka.brokers == "k1:9092,k2:9092"


def test_kafka_brokers_overrides_the_files_kafka_url(tmp_path: Path) -> None:
    path = toml_file(tmp_path, 'broker = "kafka://file:9092"\n')
    assert load_settings(path, env={}).kafka.brokers == "file:9092"
    s = load_settings(path, env={"KAFKA_BROKERS": "env:9092"})
    assert (s.broker, s.kafka.brokers) == ("kafka://env:9092", "env:9092")


def test_kafka_brokers_keeps_an_explicit_memory_broker(tmp_path: Path) -> None:
    path = toml_file(tmp_path, 'broker = "memory://"\n')
    s = load_settings(path, env={"KAFKA_BROKERS": "env:9092"})
    assert (s.broker, s.kafka.brokers) == ("memory://", "env:9092")


def test_channelcast_broker_wins_over_everything(tmp_path: Path) -> None:
    path = toml_file(tmp_path, 'broker = "memory://"\n')
    s = load_settings(path, env={"CHANNELCAST_BROKER": "kafka://b:1", "KAFKA_BROKERS": "x:2"})
    assert (s.broker, s.kafka.brokers) == ("kafka://b:1", "b:1")


def test_a_lowercase_broker_variable_is_not_an_override() -> None:
    assert load_settings(None, env={"broker": "kafka://x:1"}).broker == "memory://"


@pytest.mark.parametrize(("var", "value", "problem"), [
    ("KAFKA_DEFAULT_PARTITIONS", "ten", "must be an integer"),
    ("KAFKA_DEFAULT_PARTITIONS", "0", "must be >= 1"),
    ("KAFKA_DEFAULT_PARTITIONS", "1_0", "must be an integer"),
    ("KAFKA_DEFAULT_PARTITIONS", "\u0661\u0660", "must be an integer"),
    ("KAFKA_MANUAL_COMMIT", "maybe", "must be true or false"),
    ("KAFKA_TOPIC_STRATEGY", "bogus", "unknown strategy 'bogus'"),
    ("KAFKA_TOPIC_STRATEGY", "no.such.module:X", "cannot import topic strategy"),
    ("KAFKA_PARTITIONER", "sha1", "unknown partitioner 'sha1'"),
    ("KAFKA_PARTITIONER", f"{HERE}:bad_partitioner", "returned 99"),
    ("KAFKA_DEFAULT_TOPIC", "bad topic!", "not a valid Kafka topic name"),
    ("KAFKA_TOPIC_PREFIX", "has space", "cannot start a Kafka topic name"),
    ("KAFKA_TOPIC_PREFIX", "p" * 85, "cannot start a Kafka topic name"),
    ("KAFKA_BROKERS", "no-port", "is not host:port"),
    ("KAFKA_BROKERS", "h:1,h:99999", "'h:99999' is not host:port"),
    ("KAFKA_DEAD_LETTER_TOPIC", "realtime", "is also a data topic"),
    ("CHANNELCAST_BROKER", "redis://x", "must be memory:// or kafka://"),
    ("CHANNELCAST_BROKER", "kafka://", "needs at least one host:port"),
])
def test_bad_environment_values_name_the_variable(var: str, value: str, problem: str) -> None:
    exc = error(env={var: value})
    assert exc.key == var
    assert problem in exc.problem
    assert str(exc).startswith(f"{var}: ")


def test_conflict_caused_by_the_environment_says_so(tmp_path: Path) -> None:
    path = toml_file(tmp_path, """\
        [kafka.topic_mapping."orders.*"]
        topic = "realtime"
        partitions = 10
        """)
    load_settings(path, env={})
    exc = error(path, env={"KAFKA_DEFAULT_PARTITIONS": "4"})
    assert exc.key == 'kafka.topic_mapping."orders.*".partitions'
    assert "KAFKA_DEFAULT_PARTITIONS" in exc.problem


def test_dead_letter_clash_caused_by_the_environment_says_so() -> None:
    exc = error(env={"KAFKA_DEFAULT_TOPIC": "realtime.dlq"})
    assert exc.key == "kafka.dead_letter_topic"
    assert exc.problem == ("'realtime.dlq' is also a data topic (at kafka.default_topic "
                           "(set by KAFKA_DEFAULT_TOPIC)); pick another name")


def bad_partitioner(key: bytes, partitions: int) -> int:
    return 99


def good_partitioner(key: bytes, partitions: int) -> int:
    return len(key) % partitions


def test_custom_strategy_and_partitioner_by_import_path_in_the_file(tmp_path: Path) -> None:
    path = toml_file(tmp_path, f"""\
        [kafka]
        topic_strategy = "tests.unit.test_strategies:FixedTopic"
        partitioner = "{HERE}:good_partitioner"
        """)
    k = load_settings(path, env={}).kafka
    assert k.topic_strategy == "tests.unit.test_strategies:FixedTopic"
    assert k.partitioner == f"{HERE}:good_partitioner"


# --- file errors: each names the key -------------------------------------------------------


@pytest.mark.parametrize(("text", "key", "problem"), [
    ('[kafka]\ntopic_strategy = "round-robin"\n', "kafka.topic_strategy",
     "unknown strategy 'round-robin'"),
    ('[kafka]\ntopic_strategy = "tests.unit.test_strategies:NotAStrategy"\n',
     "kafka.topic_strategy", "does not implement TopicStrategy"),
    ('[kafka]\npartitioner = "random"\n', "kafka.partitioner", "unknown partitioner"),
    ('[kafka.topic_mapping."user.*"]\npartitions = 10\n',
     'kafka.topic_mapping."user.*".topic', "pattern has no topic"),
    ('[kafka.topic_mapping."user.*"]\ntopic = "realtime.user"\n',
     'kafka.topic_mapping."user.*".partitions', "pattern has no partition count"),
    ('[kafka.topic_mapping."user.*"]\ntopic = "realtime.user"\npartitions = 0\n',
     'kafka.topic_mapping."user.*".partitions', "must be >= 1, got 0"),
    ('[kafka.topic_mapping."user.*"]\ntopic = "realtime.user"\npartitions = -3\n',
     'kafka.topic_mapping."user.*".partitions', "must be >= 1, got -3"),
    ('[kafka.topic_mapping."user.*"]\ntopic = "realtime.user"\npartitions = 2.5\n',
     'kafka.topic_mapping."user.*".partitions', "must be an integer"),
    ('[kafka.topic_mapping."user.*"]\ntopic = "realtime.user"\npartitions = true\n',
     'kafka.topic_mapping."user.*".partitions', "must be an integer"),
    ('[kafka.topic_mapping."user.*"]\ntopic = "real time"\npartitions = 3\n',
     'kafka.topic_mapping."user.*".topic', "not a valid Kafka topic name"),
    ('[kafka.topic_mapping."user.*"]\ntopic = "t"\npartitions = 3\nretention = 5\n',
     'kafka.topic_mapping."user.*".retention', "unknown key"),
    ('[kafka.topic_mapping."user/*"]\ntopic = "t"\npartitions = 3\n',
     'kafka.topic_mapping.user/*', "has character '/', which no channel name can contain"),
    ('[kafka]\ntopic_mapping = "user.*"\n', "kafka.topic_mapping",
     "must be a table of pattern"),
    ('[kafka.topic_mapping]\n"user.*" = "realtime.user"\n', 'kafka.topic_mapping."user.*"',
     "must be a table/mapping"),
    ("""[kafka.topic_mapping."user.*"]\ntopic = "realtime.user"\npartitions = 10\n
[kafka.topic_mapping."member.*"]\ntopic = "realtime.user"\npartitions = 5\n""",
     'kafka.topic_mapping."member.*".partitions',
     "topic 'realtime.user' is declared with 5 partitions here and 10 at "
     'kafka.topic_mapping."user.*".partitions'),
    ('[kafka]\ndefault_partitions = 10\n[kafka.topic_mapping."x.*"]\ntopic = "realtime"\n'
     "partitions = 3\n", 'kafka.topic_mapping."x.*".partitions',
     "declared with 3 partitions here and 10 at kafka.default_partitions"),
    ('[kafka]\ndead_letter_topic = "realtime"\n', "kafka.dead_letter_topic",
     "is also a data topic (at kafka.default_topic)"),
    ('[kafka.topic_mapping."a.*"]\ntopic = "realtime.dlq"\npartitions = 1\n',
     "kafka.dead_letter_topic", 'data topic (at kafka.topic_mapping."a.*".topic)'),
    ("[kafka]\nretry_backoff_ms = 500\nretry_backoff_max_ms = 100\n",
     "kafka.retry_backoff_max_ms", "must be >= kafka.retry_backoff_ms"),
    ('[kafka]\ntimeout_s = "nan"\n', "kafka.timeout_s", "must be a finite number"),
    ("[kafka]\ntimeout_s = inf\n", "kafka.timeout_s", "must be a finite number"),
    ("[kafka]\ntimeout_s = 0\n", "kafka.timeout_s", "must be > 0.0"),
    ("[kafka]\ntimeout_s = [1]\n", "kafka.timeout_s", "must be a number"),
    ("[kafka]\nmax_message_bytes = 10\n", "kafka.max_message_bytes", "must be >= 1024"),
    ('[kafka]\nbrokers = "a:1,,b:2"\n', "kafka.brokers", "is not host:port"),
    ("[kafka]\nproducer = { acks = [1] }\n", "kafka.producer.acks", "must be scalars"),
    ("[kafka]\nfrobnicate = 1\n", "kafka.frobnicate", "unknown key"),
    ("kafka = 3\n", "kafka", "must be a table/mapping"),
    ('[gateway]\nslow_client_policy = "block"\n', "gateway.slow_client_policy",
     "must be drop-oldest or disconnect"),
    ("[gateway]\nport = 70000\n", "gateway.port", "must be 0..65535"),
    ("[gateway]\nsend_queue = 0\n", "gateway.send_queue", "must be >= 1"),
    ("[gateway]\nhost = 5\n", "gateway.host", "must be a non-empty string"),
    ("[gateway]\ncolour = 5\n", "gateway.colour", "unknown key"),
    ('broker = "amqp://x"\n', "broker", "must be memory:// or kafka://"),
    ('broker = "kafka://nohostport"\n', "broker", "is not host:port"),
    ("[redis]\nurl = 1\n", "redis", "unknown top-level key"),
])
def test_file_errors_name_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    exc = error(toml_file(tmp_path, text))
    assert exc.key == key
    assert problem in exc.problem
    assert str(exc) == f"{key}: {exc.problem}"


@pytest.mark.parametrize(("text", "key", "problem"), [
    ("kafka:\n  topic_mapping:\n    - {topic: t, partitions: 1}\n",
     "kafka.topic_mapping[0].pattern", "is missing"),
    ("kafka:\n  topic_mapping:\n    - {pattern: 'a.*', topic: t, partitions: 1}\n"
     "    - {pattern: 'a.*', topic: u, partitions: 1}\n",
     'kafka.topic_mapping."a.*"', "pattern is declared twice"),
    ("kafka:\n  topic_mapping:\n    - {pattern: '', topic: t, partitions: 1}\n",
     "kafka.topic_mapping[0].pattern", "must be a non-empty string"),
    ("kafka:\n  topic_mapping:\n    123: {topic: t, partitions: 1}\n",
     "kafka.topic_mapping.123", "pattern must be a non-empty string, got 123"),
    ("kafka:\n  producer: {1: x}\n", "kafka.producer.1", "keys must be strings"),
    ("kafka:\n  default_partitions: 1.5\n", "kafka.default_partitions", "must be an integer"),
    ("kafka:\n  manual_commit: 2\n", "kafka.manual_commit", "must be true or false"),
    ("1: x\nkafka: {}\n", "1", "unknown top-level key"),
    ("- just\n- a list\n", None, "must hold a table/mapping at the top"),
    ("kafka: [unclosed\n", None, "cannot parse config file"),
])
def test_yaml_errors_name_the_key(tmp_path: Path, text: str, key: str | None,
                                  problem: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    exc = error(path)
    assert exc.key == (key or str(path))
    assert problem in exc.problem


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    exc = error(missing)
    assert (exc.key, exc.problem) == (str(missing),
                                      "cannot read config file: No such file or directory")
    directory = tmp_path / "dir.toml"
    directory.mkdir()
    assert "cannot read config file" in error(directory).problem
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[kafka]\n")
    assert "not UTF-8" in error(binary).problem
    broken = toml_file(tmp_path, "[kafka\n", name="broken.toml")
    exc = error(broken)
    assert (exc.key, exc.problem.split(":")[0]) == (str(broken), "cannot parse config file")
    other = toml_file(tmp_path, "x = 1\n", name="settings.ini")
    assert error(other).problem == "config file must end in .toml, .yaml or .yml"


def test_missing_file_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    exc = error(env={"CHANNELCAST_CONFIG": str(tmp_path / "gone.yaml")})
    assert exc.key == f"CHANNELCAST_CONFIG={tmp_path / 'gone.yaml'}"


def test_a_broken_section_is_reported_even_when_the_environment_sets_keys_in_it(
        tmp_path: Path) -> None:
    exc = error(toml_file(tmp_path, "kafka = 3\n"), env={"KAFKA_DEFAULT_PARTITIONS": "4"})
    assert (exc.key, exc.problem) == ("kafka", "must be a table/mapping, got int")
    empty = tmp_path / "empty.yaml"
    empty.write_text("kafka:\n")
    assert load_settings(empty, env={"KAFKA_DEFAULT_PARTITIONS": "4"}).kafka.default_partitions == 4


@pytest.mark.parametrize(("text", "key", "known"), [
    ("[kafka]\nfrobnicate = 1\n", "kafka.frobnicate",
     [f.name for f in dataclasses.fields(KafkaSettings)]),
    ("[gateway]\ncolour = 5\n", "gateway.colour",
     [f.name for f in dataclasses.fields(GatewaySettings)]),
    ('[kafka.topic_mapping."a.*"]\ntopic = "t"\npartitions = 1\nretention = 5\n',
     'kafka.topic_mapping."a.*".retention', ["topic", "partitions", "replication_factor",
                                             "config"]),
])
def test_unknown_keys_list_the_known_ones(tmp_path: Path, text: str, key: str,
                                          known: list[str]) -> None:
    exc = error(toml_file(tmp_path, text))
    assert exc.key == key
    assert exc.problem.startswith("unknown key (")
    assert exc.problem.endswith(f": {', '.join(known)})")


def test_numbers_and_flags_written_as_text_in_a_file_still_count(tmp_path: Path) -> None:
    path = toml_file(tmp_path, """\
        [kafka]
        default_partitions = " 12 "
        timeout_s = "2.5"
        manual_commit = "yes"
        [gateway]
        demo = "off"
        """)
    s = load_settings(path, env={})
    assert (s.kafka.default_partitions, s.kafka.timeout_s, s.kafka.manual_commit,
            s.gateway.demo) == (12, 2.5, True, False)


@pytest.mark.parametrize(("text", "key", "problem"), [
    ('[kafka.topic_mapping."a.*"]\ntopic = "t"\npartitions = 1\nconfig = 5\n',
     'kafka.topic_mapping."a.*".config', "must be a table/mapping, got int"),
    ("[kafka]\nproducer = 3\n", "kafka.producer", "must be a table/mapping, got int"),
    ("[kafka]\ndefault_partitions = 2.0\n", "kafka.default_partitions",
     "must be an integer, got 2.0"),
    ('[gateway]\npresence_ttl_s = "-inf"\n', "gateway.presence_ttl_s",
     "must be a finite number, got -inf"),
    ('broker = ""\n', "broker", "must be a non-empty string, got ''"),
])
def test_errors_are_worded_by_channelcast_not_by_pydantic(tmp_path: Path, text: str, key: str,
                                                          problem: str) -> None:
    exc = error(toml_file(tmp_path, text))
    assert (exc.key, exc.problem) == (key, problem)


def test_only_the_documented_variables_are_read_from_the_process_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith(("KAFKA_", "CHANNELCAST_"))]:
        monkeypatch.delenv(var)
    # pydantic-settings would read a settings class's field names; channelcast must not.
    monkeypatch.setenv("broker", "kafka://x:1")
    monkeypatch.setenv("kafka", '{"default_partitions": 3}')
    monkeypatch.setenv("KAFKA_DEFAULT_PARTITIONS", "7")
    s = load_settings(None)
    assert (s.broker, s.kafka.default_partitions) == ("memory://", 7)
    assert load_settings(None, env={}).kafka.default_partitions == 10  # given env only


def test_config_error_is_in_the_tree_and_a_value_error(tmp_path: Path) -> None:
    exc = error(toml_file(tmp_path, "[kafka]\ndefault_partitions = 0\n"))
    assert isinstance(exc, ChannelcastError)
    assert isinstance(exc, ValueError)


# --- docs/configuration.md stays complete -------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_setting_and_variable_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    rows = {line.split("|")[1].strip().strip("`") for line in text.splitlines()
            if line.startswith("| `")}
    for cls in (KafkaSettings, GatewaySettings, PusherSettings, AppSettings):
        for field in dataclasses.fields(cls):
            assert field.name in rows, f"docs/configuration.md lacks {cls.__name__}.{field.name}"
    for var in [*ENV_KAFKA, *ENV_GATEWAY, "CHANNELCAST_BROKER", "CHANNELCAST_CONFIG"]:
        assert f"`{var}`" in text, f"docs/configuration.md lacks {var}"
