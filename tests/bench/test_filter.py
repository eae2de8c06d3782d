"""The ``filter`` scenario's parts that need no broker: the records it writes, how many,
and how its readers are reported and judged (the scenario itself runs in
test_quick_kafka.py)."""

from __future__ import annotations

import json
import sys

import pytest

from channelcast.bench import (
    READ_COUNT,
    READ_FILTER,
    READ_GATEWAY,
    BenchConfig,
    BenchResults,
    ReadRun,
    check_targets,
    render_markdown,
)
from channelcast.bench.filtering import fill_count, filter_channels, record_maker
from channelcast.bench.scenarios import padding_for
from channelcast.brokers.base import HEADER_CHANNEL, HEADER_EVENT, HEADER_ID
from channelcast.message import Envelope, decode, encode

TARGET = ("gateway node reading 1 of 101 channels in a partition >= 0.5x a raw consumer "
          "filtering by channel header")


def test_the_records_are_what_channelcasts_publisher_writes() -> None:
    channels = filter_channels(100)
    assert channels[0] == "filter.0"
    assert len(set(channels)) == 101
    make = record_maker(channels, padding_for(256, channels))
    ids = set()
    for i in (0, 1, 100, 101, 202):
        value, key, headers = make(i)
        env = decode(value)
        channel = channels[i % 101]
        assert env.channel == channel
        assert key == channel.encode()
        # The headers of KafkaBroker._outgoing, in its order: channel first.
        assert list(headers) == [HEADER_CHANNEL, HEADER_EVENT, HEADER_ID]
        assert headers[HEADER_CHANNEL] == channel.encode()
        assert headers[HEADER_EVENT] == env.event == "bench"
        assert headers[HEADER_ID] == env.id
        # Byte for byte encode()'s output for that envelope (the id spliced in).
        assert value == encode(Envelope(env.channel, env.event, env.data, id=env.id,
                                        timestamp=env.timestamp))
        ids.add(env.id)
    assert len(ids) == 5  # a fresh id per record: the feed drops repeated ids


@pytest.mark.parametrize(("records", "channels"), [(1, 101), (100, 101), (20_000, 101),
                                                     (1_000_000, 101), (7, 3)])
def test_the_fill_starts_and_ends_on_the_subscribed_channel(records: int,
                                                           channels: int) -> None:
    count = fill_count(records, channels)
    assert count >= records
    assert count - records <= channels  # rounded up by less than one turn
    assert (count - 1) % channels == 0  # record count-1 is channel 0's, as is record 0


def _reads(*rates: tuple[float, float, float]) -> list[ReadRun]:
    out = []
    for n, (gateway, filtering, counting) in enumerate(rates, start=1):
        for reader, rate in ((READ_GATEWAY, gateway), (READ_FILTER, filtering),
                             (READ_COUNT, counting)):
            out.append(ReadRun(reader, n, 1_000_000, 1_000_000 / rate, 2.0, 9_901,
                               "1.00 1.00 1.00"))
    return out


def test_the_target_is_judged_on_the_median_of_the_runs_ratios() -> None:
    results = BenchResults(config=BenchConfig(), broker="kafka://x",
                           reads=_reads((100_000, 400_000, 900_000),
                                        (300_000, 500_000, 900_000),
                                        (240_000, 400_000, 800_000)))
    check = {t.name: t for t in check_targets(results)}[TARGET]
    assert check.measured == "0.60x (median of 0.25x, 0.60x, 0.60x)"
    assert check.met is True
    results.reads = _reads((100_000, 400_000, 900_000), (200_000, 500_000, 900_000),
                           (240_000, 400_000, 800_000))
    check = {t.name: t for t in check_targets(results)}[TARGET]
    assert check.measured == "0.40x (median of 0.25x, 0.40x, 0.60x)"
    assert check.met is False


def test_without_reads_the_target_is_not_measured() -> None:
    check = {t.name: t for t in check_targets(BenchResults(BenchConfig(), "memory://"))}
    assert check[TARGET].met is None
    assert check[TARGET].measured == "n/a"


def test_the_report_lists_every_reader_with_medians_and_spread() -> None:
    results = BenchResults(config=BenchConfig(), broker="kafka://x",
                           reads=_reads((100_000, 400_000, 900_000),
                                        (300_000, 500_000, 900_000),
                                        (240_000, 400_000, 800_000)))
    text = render_markdown(results)
    assert "## 5. Fan-out read: 1 of 101 channels in a partition" in text
    assert ("| channelcast gateway node | 3 | 240,000 (100,000–300,000) | 2.00 (2.00–2.00) | "
            "0.60x | 100,000 (load 1.00), 300,000 (load 1.00), 240,000 (load 1.00) |") in text
    # Ratios per run (2.25x, 1.80x, 2.00x), then their median.
    assert ("| raw consumer counting | 3 | 900,000 (800,000–900,000) | 2.00 (2.00–2.00) | "
            "2.00x |") in text
    assert f"| {TARGET} | 0.60x (median of 0.25x, 0.60x, 0.60x) | yes |" in text


def test_a_reader_process_says_what_went_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    from channelcast.bench import nodes

    assert nodes.main(["no-such-mode", "{}"]) == 2
    assert capsys.readouterr().out.startswith("error: usage: python -m channelcast.bench.nodes")
    # A broker that is not there: one error line (and exit code 1), never a hang.
    spec = {"bootstrap": "127.0.0.1:1", "topic": "t", "start": 0, "count": 1}
    assert nodes.main(["raw-reader", json.dumps(spec | {"timeout_s": 1})]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "ready"
    assert out[1].startswith("error: ")
    assert sys.modules["channelcast.bench.nodes"] is nodes
