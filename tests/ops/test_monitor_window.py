"""``channelcast monitor`` ranks hot channels by one time window (real broker).

The issue's case: a channel that wrote 4,000 messages and one that wrote 1,500 a moment
later, on different partitions. Ranked by each partition's newest 200 messages over the
time they spanned, the later, smaller one came first; ranked by the window, the larger.
"""

from __future__ import annotations

import time

import pytest

from channelcast.brokers.base import HEADER_CHANNEL, HEADER_ID
from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.brokers.kafka.reader import LogWriter
from channelcast.config import load_settings
from channelcast.message import Envelope, encode
from channelcast.ops.monitor import collect
from channelcast.ops.provision import apply_plan, plan_topics
from channelcast.strategies import create_strategy
from channelcast.strategies.base import TopicStrategy
from channelcast.types import ChannelName
from tests.ops.conftest import ConfigWriter

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def _write(writer: LogWriter, strategy: TopicStrategy, channel: str, count: int) -> None:
    route = strategy.route(ChannelName(channel))
    for n in range(count):
        env = Envelope(ChannelName(channel), "tick", {"n": n})
        writer.write(route.topic, route.partition, route.key, encode(env),
                     [(HEADER_CHANNEL, channel.encode()), (HEADER_ID, env.id.encode())])
    writer.flush()


def test_a_channel_with_4000_ranks_above_one_with_1500_written_later(
        write_config: ConfigWriter, admin: KafkaAdmin) -> None:
    settings = load_settings(write_config(user_partitions=4), env={})
    apply_plan(plan_topics(settings, admin), admin)
    strategy = create_strategy(settings.kafka)
    big = "user.big"
    small = next(c for c in (f"user.small{i}" for i in range(100))
                 if strategy.route(ChannelName(c)).partition
                 != strategy.route(ChannelName(big)).partition)
    topic = strategy.route(ChannelName(big)).topic
    with LogWriter(admin.bootstrap) as writer:
        _write(writer, strategy, big, 4000)
        time.sleep(1.5)  # the smaller channel writes later, as in the issue
        _write(writer, strategy, small, 1500)

    for sample in (200, 1000, 5000):  # the old default, the new one, everything
        snap = collect(admin, [topic], groups=[], sample=sample)
        ranked = [(h.channel, h.messages) for h in snap.hot_channels]
        assert ranked == [(big, 4000), (small, 1500)], sample
        first, second = snap.hot_channels
        assert first.rate == pytest.approx(4000 / 60)
        assert first.rate > second.rate
        assert first.estimated is (sample < 4000)
        assert first.sampled == min(sample, 4000)
        window = snap.hot_window
        assert (window.seconds, window.to_ms - window.from_ms) == (60.0, 60_000)
        assert window.messages == 5500
        assert window.read == min(sample, 4000) + min(sample, 1500)
        assert snap.to_dict()["hot_window"]["messages"] == 5500

    # A window that ends after the writes and is shorter than the pause since: empty.
    time.sleep(1.5)
    quiet = collect(admin, [topic], groups=[], window_s=1.0)
    assert quiet.hot_channels == ()
    assert quiet.hot_window.messages == 0
    assert quiet.topics[0].messages == 5500  # the counts from the watermarks stay
