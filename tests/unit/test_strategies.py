"""Topic strategies: routes, provisioning lists, subscription topics, the registry."""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channelcast.config import KafkaSettings, TopicMapping, load_settings
from channelcast.errors import StrategyError
from channelcast.strategies import (
    GroupedTopics,
    OneTopicPerChannel,
    Route,
    TopicRule,
    TopicSpec,
    check_partitioner,
    crc32_partition,
    create_strategy,
    legacy_topic_name,
    load_partitioner,
    murmur2_partition,
)
from channelcast.types import ChannelName, TopicName

EXAMPLE = resources.files("channelcast") / "examples" / "channelcast.toml"
ORIGINAL_CHANNELS = [f"user.{i}" for i in range(1, 1001)] + ["public.news"]


def example_kafka(**changes: object) -> KafkaSettings:
    with resources.as_file(EXAMPLE) as path:
        kafka = load_settings(path, env={}).kafka
    return dataclasses.replace(kafka, **changes)  # type: ignore[arg-type]


def grouped(*rules: tuple[str, str, int], default: tuple[str, int] = ("realtime", 10),
            partitioner: str = "murmur2") -> GroupedTopics:
    return GroupedTopics([TopicRule(p, TopicName(t), n) for p, t, n in rules],
                         TopicSpec(TopicName(default[0]), default[1]),
                         load_partitioner(partitioner))


# --- the original's example -------------------------------------------------------------


def test_example_grouped_needs_exactly_two_topics_for_the_originals_channels() -> None:
    strategy = create_strategy(example_kafka())
    assert strategy.name == "grouped"
    assert strategy.topics_for(ORIGINAL_CHANNELS) == {"realtime.user", "realtime.public"}
    users = [strategy.route(ChannelName(f"user.{i}")) for i in range(1, 1001)]
    assert {r.topic for r in users} == {"realtime.user"}
    assert {r.partition for r in users} == set(range(10))  # spread over all 10 partitions
    news = strategy.route(ChannelName("public.news"))
    assert news == Route(TopicName("realtime.public"),
                         murmur2_partition(b"public.news", 3), b"public.news")
    specs = {s.name: s.partitions for s in strategy.topics()}
    assert specs == {"realtime.user": 10, "realtime.public": 3, "realtime": 10}


def test_example_one_per_channel_needs_1001_legacy_topics() -> None:
    strategy = create_strategy(example_kafka(topic_strategy="one-per-channel"))
    assert strategy.name == "one-per-channel"
    topics = strategy.topics_for(ORIGINAL_CHANNELS)
    assert len(topics) == 1001
    assert {"realtime_user_1", "realtime_user_1000", "realtime_public_news"} <= topics
    specs = strategy.topics(ORIGINAL_CHANNELS)
    assert len(specs) == 1001
    assert {s.partitions for s in specs} == {1}
    assert strategy.route(ChannelName("user.1")) == Route(
        TopicName("realtime_user_1"), 0, b"user.1")


# --- grouped ------------------------------------------------------------------------------


def test_first_matching_pattern_wins_and_unmatched_go_to_the_default() -> None:
    s = grouped(("user.vip.*", "realtime.vip", 2), ("user.*", "realtime.user", 10),
                ("*.news", "realtime.news", 4))
    assert s.route(ChannelName("user.vip.7")).topic == "realtime.vip"
    assert s.route(ChannelName("user.7")).topic == "realtime.user"
    assert s.route(ChannelName("user.news")).topic == "realtime.user"
    assert s.route(ChannelName("sport.news")).topic == "realtime.news"
    assert s.route(ChannelName("orders")).topic == "realtime"
    assert s.route(ChannelName("User.7")).topic == "realtime"  # patterns are case-sensitive


def test_grouped_route_is_frozen_and_keyed_by_the_channel() -> None:
    s = grouped(("user.*", "realtime.user", 10))
    route = s.route(ChannelName("user.42"))
    assert route.key == b"user.42"
    assert route.partition == murmur2_partition(b"user.42", 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        route.topic = TopicName("other")  # type: ignore[misc]


def test_crc32_partitioner_is_selectable_for_mixed_deployments() -> None:
    s = grouped(("user.*", "realtime.user", 10), partitioner="crc32")
    parts = [s.route(ChannelName(f"user.{i}")).partition for i in range(200)]
    assert parts == [crc32_partition(f"user.{i}".encode(), 10) for i in range(200)]
    assert parts != [murmur2_partition(f"user.{i}".encode(), 10) for i in range(200)]


def test_topics_lists_each_topic_once_with_its_partitions() -> None:
    s = grouped(("a.*", "t.one", 3), ("b.*", "t.one", 3), ("c.*", "t.two", 5))
    assert [(t.name, t.partitions) for t in s.topics()] == [
        ("t.one", 3), ("t.two", 5), ("realtime", 10)]


@pytest.mark.parametrize(("patterns", "expected"), [
    (["user.1"], {"realtime.user"}),
    (["orders"], {"realtime"}),
    (["public.*"], {"realtime.public"}),
    # user.* comes after user.vip.*: channels matching it may live in realtime.vip too.
    (["user.*"], {"realtime.vip", "realtime.user"}),
    (["user.vip.*"], {"realtime.vip"}),
    (["user.1*"], {"realtime.user"}),
    (["*"], {"realtime.vip", "realtime.user", "realtime.public", "realtime"}),
    (["order?"], {"realtime"}),
    (["public.*", "orders"], {"realtime.public", "realtime"}),
])
def test_subscription_topics_cover_every_channel_a_pattern_matches(
        patterns: list[str], expected: set[str]) -> None:
    s = grouped(("user.vip.*", "realtime.vip", 2), ("user.*", "realtime.user", 10),
                ("public.*", "realtime.public", 3))
    assert s.subscription_topics(patterns) == expected


CHANNEL_ALPHABET = "ab.1-"
GLOB_ALPHABET = CHANNEL_ALPHABET + "*?[]!"


@settings(deadline=None)
@given(rules=st.lists(st.text(GLOB_ALPHABET, min_size=1, max_size=5), max_size=4, unique=True),
       pattern=st.text(GLOB_ALPHABET, min_size=1, max_size=5),
       channels=st.lists(st.text(CHANNEL_ALPHABET, min_size=1, max_size=7), max_size=30))
def test_subscription_topics_never_miss_a_matching_channel(
        rules: list[str], pattern: str, channels: list[str]) -> None:
    s = grouped(*[(p, f"t{i}", 2) for i, p in enumerate(rules)])
    topics = s.subscription_topics([pattern])
    for channel in channels:
        if fnmatch.fnmatchcase(channel, pattern):
            assert s.route(ChannelName(channel)).topic in topics


# --- one-per-channel ----------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "channel", "topic"), [
    ("realtime", "user.1", "realtime_user_1"),
    ("realtime", "private-orders.7", "realtime_private_orders_7"),
    ("app", "a=b@c,d;e_f", "app_a_b_c_d_e_f"),
    ("app.v2", "X9", "app.v2_X9"),
])
def test_legacy_topic_names(prefix: str, channel: str, topic: str) -> None:
    assert legacy_topic_name(prefix, channel) == topic
    assert OneTopicPerChannel(prefix).route(ChannelName(channel)).topic == topic


@pytest.mark.parametrize(("pattern", "expected"), [
    ("user.1", "realtime_user_1"),
    ("user.*", "^realtime_user_.*$"),
    ("user.[12]?", "^realtime_user_[12].$"),
    ("user.[!0-4]", "^realtime_user_[5-9A-Z_a-z]$"),
    ("user.[.-1]", "^realtime_user_[01_]$"),  # "." .. "1" also spans "/" and "0"
    ("user.[^a]", "^realtime_user_[a]$"),  # fnmatch: "^" is not negation
    ("user.[/]", "^realtime_user_!$"),  # no channel can match
])
def test_legacy_subscription_topics(pattern: str, expected: str) -> None:
    assert OneTopicPerChannel("realtime").subscription_topics([pattern]) == {expected}


@settings(deadline=None)
@given(pattern=st.text("ab.1-_*?[]!^", min_size=1, max_size=8),
       channels=st.lists(st.text(CHANNEL_ALPHABET, min_size=1, max_size=7), max_size=30))
def test_legacy_topic_regex_matches_every_matching_channels_topic(
        pattern: str, channels: list[str]) -> None:
    (sub,) = OneTopicPerChannel("realtime").subscription_topics([pattern])
    for channel in channels:
        if fnmatch.fnmatchcase(channel, pattern):
            topic = legacy_topic_name("realtime", channel)
            assert topic == sub or (sub.startswith("^") and re.fullmatch(sub[1:-1], topic))


# --- registry, custom strategies and partitioners ----------------------------------------


class FixedTopic:
    """A custom strategy for the import-path tests: everything on one topic."""

    name = "fixed"

    def __init__(self, settings: KafkaSettings) -> None:
        self.topic = TopicName(f"{settings.default_topic}.all")

    def route(self, channel: ChannelName) -> Route:
        return Route(self.topic, 0, channel.encode())

    def topics(self, channels: Iterable[str] = ()) -> list[TopicSpec]:
        return [TopicSpec(self.topic, 1)]

    def topics_for(self, channels: Iterable[str]) -> frozenset[TopicName]:
        return frozenset([self.topic])

    def subscription_topics(self, patterns: Iterable[str]) -> frozenset[str]:
        return frozenset([self.topic])


class NotAStrategy:
    def __init__(self, settings: KafkaSettings) -> None:
        pass


def broken_factory(settings: KafkaSettings) -> FixedTopic:
    raise RuntimeError("no database")


def last_partition(key: bytes, partitions: int) -> int:
    return partitions - 1


def out_of_range(key: bytes, partitions: int) -> int:
    return partitions


class Partitioners:
    first = staticmethod(lambda key, partitions: 0)


HERE = __name__


def test_custom_strategy_by_import_path() -> None:
    strategy = create_strategy(KafkaSettings(topic_strategy=f"{HERE}:FixedTopic"))
    assert isinstance(strategy, FixedTopic)
    assert strategy.route(ChannelName("x")) == Route(TopicName("realtime.all"), 0, b"x")


def test_custom_partitioner_by_import_path_including_nested_names() -> None:
    s = create_strategy(KafkaSettings(partitioner=f"{HERE}:last_partition",
                                      default_partitions=4))
    assert {s.route(ChannelName(f"c{i}")).partition for i in range(20)} == {3}
    assert load_partitioner(f"{HERE}:Partitioners.first")(b"k", 5) == 0


@pytest.mark.parametrize(("name", "problem"), [
    ("nope", "unknown topic strategy 'nope'"),
    ("no.such.module:X", "cannot import topic strategy"),
    (f"{HERE}:Missing", "cannot import topic strategy"),
    (f"{HERE}:NotAStrategy", "does not implement TopicStrategy"),
    (f"{HERE}:broken_factory", "failed to build: RuntimeError('no database')"),
    (f"{HERE}:HERE", "is not callable"),
])
def test_bad_strategies_raise_strategy_error(name: str, problem: str) -> None:
    with pytest.raises(StrategyError, match=re.escape(problem)):
        create_strategy(KafkaSettings(topic_strategy=name))


@pytest.mark.parametrize(("name", "problem"), [
    ("md5", "unknown partitioner 'md5'"),
    ("no_such_module:f", "cannot import partitioner"),
    (f"{HERE}:HERE", "is not callable"),
])
def test_bad_partitioner_names_raise_strategy_error(name: str, problem: str) -> None:
    with pytest.raises(StrategyError, match=re.escape(problem)):
        load_partitioner(name)


def test_check_partitioner_catches_out_of_range_and_crashing_partitioners() -> None:
    check_partitioner(murmur2_partition)
    check_partitioner(crc32_partition)
    with pytest.raises(StrategyError, match=r"want an int in 0\.\.0"):
        check_partitioner(out_of_range)
    with pytest.raises(StrategyError, match="failed on key"):
        check_partitioner(lambda key, partitions: 1 // 0)
    with pytest.raises(StrategyError, match="returned '0'"):
        check_partitioner(lambda key, partitions: "0")  # type: ignore[arg-type,return-value]


def test_mapping_rows_become_rules_with_inherited_replication() -> None:
    kafka = KafkaSettings(replication_factor=3, topic_mapping=(
        TopicMapping("a.*", TopicName("t.a"), 2),
        TopicMapping("b.*", TopicName("t.b"), 4, replication_factor=1,
                     config={"retention.ms": "60000"})))
    specs = {s.name: s for s in create_strategy(kafka).topics()}
    assert (specs["t.a"].partitions, specs["t.a"].replication_factor) == (2, 3)
    assert (specs["t.b"].replication_factor, dict(specs["t.b"].config)) == (
        1, {"retention.ms": "60000"})
    assert specs["realtime"].replication_factor == 3


# --- the custom strategy example in docs/strategies.md works --------------------------------


def test_documented_custom_strategy_and_partitioner_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "strategies.md"
    text = docs.read_text().split("## Writing your own", 1)[1]
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    package = tmp_path / "docs_example_app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "routing.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\ntopic_strategy = "docs_example_app.routing:PerTenant"\n'
                      'partitioner = "docs_example_app.routing:first_byte"\n'
                      "default_partitions = 4\n")
    strategy = create_strategy(load_settings(config, env={}).kafka)
    assert strategy.name == "per-tenant"
    route = strategy.route(ChannelName("tenant-42.orders"))
    assert route == Route(TopicName("rt.tenant-42"), ord("t") % 4, b"tenant-42.orders")
    assert strategy.topics_for(["a.x", "b.y", "a.z"]) == {"rt.a", "rt.b"}
    assert strategy.subscription_topics(["a.*"]) == {"^rt\\..*$"}


# --- the arrow runs one way: config imports strategies, never the reverse ------------------


def test_strategies_never_import_the_config_module() -> None:
    package = Path(__file__).resolve().parents[2] / "src" / "channelcast" / "strategies"
    modules = sorted(package.glob("*.py"))
    assert modules
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "channelcast.config" or n.startswith("channelcast.config.")
                           for n in names), f"{module.name} imports channelcast.config"


def test_any_object_with_the_settings_attributes_builds_a_strategy() -> None:
    @dataclasses.dataclass(frozen=True)
    class Spec:  # not channelcast.config.KafkaSettings
        topic_strategy: str = "grouped"
        topic_prefix: str = "p"
        default_topic: str = "d"
        default_partitions: int = 3
        replication_factor: int = 2
        topic_mapping: tuple[TopicMapping, ...] = (TopicMapping("a.*", TopicName("t.a"), 5),)
        partitioner: str = "crc32"

    strategy = create_strategy(Spec())
    assert strategy.route(ChannelName("a.1")).topic == "t.a"
    assert strategy.route(ChannelName("b.1")) == Route(
        TopicName("d"), crc32_partition(b"b.1", 3), b"b.1")


def test_partition_counts_read_as_english_in_messages() -> None:
    from channelcast.ops.layout import Disagreement, MissingTopic, RealRoute
    from channelcast.strategies.base import partitions_text

    assert (partitions_text(1), partitions_text(0), partitions_text(4)) == (
        "1 partition", "0 partitions", "4 partitions")
    assert str(Disagreement("t", 4, 1, "kafka.default_partitions")).startswith(
        "topic 't' has 1 partition but kafka.default_partitions says 4")
    assert "creates it with 1 partition on first use" in str(MissingTopic("t", 1, "x"))
    moved = RealRoute("user.1", "t", 0, "user.1", 2, 1, 10)
    assert moved.note == "config says partition 2 (of 10); the topic has 1 partition"
    same = RealRoute("user.1", "t", 2, "user.1", 2, 7, 10)
    assert same.note == "the topic has 7 partitions, the config 10 (the same partition " \
                        "either way)"
    assert RealRoute("user.1", "t", 2, "user.1", 2, None, 10).note == "no such topic"
    assert RealRoute("user.1", "t", 2, "user.1", 2, 10, 10).note == ""
