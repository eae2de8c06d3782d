"""The skew arithmetic of the monitor, without a broker."""

from __future__ import annotations

import pytest

from channelcast.ops.monitor import topic_stats


def test_topic_stats_math() -> None:
    stats = topic_stats("t", [(0, 0, 100), (1, 10, 110), (2, 0, 400), (3, 0, 0)], 2.0)
    assert [p.messages for p in stats.partitions] == [100, 100, 400, 0]
    assert stats.mean == 150
    assert stats.skew == pytest.approx(400 / 150)
    assert stats.cv == pytest.approx((((50**2) * 2 + 250**2 + 150**2) / 4) ** 0.5 / 150)
    assert [p.overloaded for p in stats.partitions] == [False, False, True, False]
    quiet = topic_stats("t", [(0, 0, 10), (1, 0, 60)], 2.0)
    assert not any(p.overloaded for p in quiet.partitions)  # too few messages to judge
