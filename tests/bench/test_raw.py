"""The raw confluent-kafka baselines report Kafka failures as the adapter does."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException

from channelcast.bench import raw
from channelcast.errors import BrokerUnavailable


@pytest.mark.timeout(30)
def test_an_unreachable_broker_is_translated_by_the_adapters_map() -> None:
    # Nothing listens on port 1. The adapter's translate() makes "all brokers down" a
    # retriable BrokerUnavailable that names what was being done, the cause kept.
    expected = (r"^raw consumer: reading watermarks failed: Kafka is unreachable "
                r"\(_(ALL_BROKERS_DOWN|TRANSPORT|TIMED_OUT)")
    with pytest.raises(BrokerUnavailable, match=expected) as info:
        raw.end_offsets("127.0.0.1:1", [("no-such-topic", 0)], timeout_s=1.0)
    assert info.value.retriable is True
    assert isinstance(info.value.__cause__, KafkaException)


def test_the_floor_records_are_channelcasts_records_with_fresh_ids() -> None:
    from channelcast.bench.scenarios import build_envelope_record
    from channelcast.brokers.base import HEADER_CHANNEL, HEADER_EVENT, HEADER_ID
    from channelcast.message import decode, encode
    from channelcast.types import ChannelName

    message = raw.RawMessage("t", 0, b"ovh.1", (ChannelName("ovh.1"), {"t": 1, "p": "é"}))
    value, headers = build_envelope_record(message)
    again, _ = build_envelope_record(message)
    env = decode(value)
    assert (env.channel, env.event, env.data) == ("ovh.1", "bench", {"t": 1, "p": "é"})
    assert value == encode(env)  # byte for byte what channelcast's publisher writes
    assert headers == {HEADER_CHANNEL: b"ovh.1", HEADER_EVENT: "bench", HEADER_ID: env.id}
    assert decode(again).id > env.id  # a fresh, later id per record
