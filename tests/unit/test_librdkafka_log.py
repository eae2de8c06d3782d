"""librdkafka's log lines during an outage: warnings, once per window per text."""

from __future__ import annotations

import logging
import time

import pytest

from channelcast.brokers.kafka.client import RepeatFilter


def _record(level: int, fac: str, name: str, text: str) -> logging.LogRecord:
    # confluent-kafka calls logger.log(level, "%s [%s] %s", fac, name, buf)
    return logging.LogRecord("channelcast.kafka.librdkafka", level, __file__, 1,
                             "%s [%s] %s", (fac, name, text), None)


def test_failed_connections_are_warnings_and_repeats_are_held_back() -> None:
    f = RepeatFilter(window_s=60)
    refused = "[thrd:h:1/bootstrap]: h:1/bootstrap: Connect to ipv4#h:1 failed: " \
              "Connection refused (after {}ms in state CONNECT)"
    first = _record(logging.ERROR, "FAIL", "rdkafka#producer-1", refused.format(0))
    assert f.filter(first)
    assert first.levelno == logging.WARNING
    # The same failure from another client, or with other counters: held back.
    for i in range(50):
        assert not f.filter(_record(logging.ERROR, "FAIL", f"rdkafka#consumer-{i}",
                                    refused.format(i)))
    # Another text goes through at once.
    other = _record(logging.WARNING, "REQTMOUT", "rdkafka#producer-1", "timed out")
    assert f.filter(other)
    assert other.levelno == logging.WARNING


def test_after_the_window_the_line_comes_again_with_the_count() -> None:
    f = RepeatFilter(window_s=0.0)
    assert f.filter(_record(logging.ERROR, "FAIL", "rdkafka#producer-1", "down"))
    again = _record(logging.ERROR, "FAIL", "rdkafka#producer-1", "down")
    assert f.filter(again)  # window of 0 s: every line passes
    assert "more like this" not in again.getMessage()


def test_held_back_repeats_are_counted_when_the_line_returns() -> None:
    f = RepeatFilter(window_s=60)
    assert f.filter(_record(logging.ERROR, "FAIL", "rdkafka#p-1", "down"))
    for _ in range(3):
        assert not f.filter(_record(logging.ERROR, "FAIL", "rdkafka#p-1", "down"))
    f.window_s = 0.0
    back = _record(logging.ERROR, "FAIL", "rdkafka#p-1", "down")
    assert f.filter(back)
    assert back.getMessage().endswith("(3 more like this since it was last logged)")


def test_skip_log_logs_a_kind_once_per_window_then_says_how_many_it_held_back(
        caplog: pytest.LogCaptureFixture) -> None:
    from channelcast.brokers.kafka.client import SkipLog

    logger = logging.getLogger("channelcast.kafka.test-skip")
    skip = SkipLog(logger, window_s=0.2)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for offset in range(50):
            skip("t", 0, offset, f"not UTF-8 JSON: byte 0x{0x80 + offset:02x} at position 0")
        skip("t", 0, 50, "no channel (no header, no envelope, key 'x' is not a channel)")
        skip("other", 0, 0, "not UTF-8 JSON: byte 0x80 at position 0")
        time.sleep(0.25)
        skip("t", 0, 51, "not UTF-8 JSON: byte 0x99 at position 7")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "skipping the record at t:0:0: not UTF-8 JSON: byte 0x80 at position 0",
        "skipping the record at t:0:50: no channel (no header, no envelope, key 'x' is "
        "not a channel)",
        "skipping the record at other:0:0: not UTF-8 JSON: byte 0x80 at position 0",
        "skipping the record at t:0:51: not UTF-8 JSON: byte 0x99 at position 7 (49 more "
        "like this in t since it was last logged, not logged one by one)",
    ]
