"""Hot-channel ranking of the monitor, without a broker: one window for every partition,
counts scaled where a partition held more than was read."""

from __future__ import annotations

import pytest

from channelcast.ops.monitor import rank_hot_channels


def test_ranks_by_messages_in_the_window_and_scales_partly_read_partitions() -> None:
    counts = {("a", "t", 0): 200, ("b", "t", 1): 150, ("c", "t", 1): 50, ("d", "t", 2): 30}
    in_window = {("t", 0): 4000, ("t", 1): 1500, ("t", 2): 30}
    read = {("t", 0): 200, ("t", 1): 200, ("t", 2): 30}
    hot = rank_hot_channels(counts, in_window, read, 60.0)
    assert [(h.channel, h.messages, h.estimated) for h in hot] == [
        ("a", 4000, True), ("b", 1125, True), ("c", 375, True), ("d", 30, False)]
    assert hot[0].rate == pytest.approx(4000 / 60)
    assert [h.sampled for h in hot] == [200, 150, 50, 30]


def test_messages_read_without_a_channel_still_count_as_read() -> None:
    hot = rank_hot_channels({("a", "t", 0): 50}, {("t", 0): 200}, {("t", 0): 100}, 10.0)
    assert [(h.messages, h.estimated) for h in hot] == [(100, True)]
