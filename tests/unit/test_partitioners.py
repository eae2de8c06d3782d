from __future__ import annotations

import zlib

import pytest

from channelcast.strategies import crc32_partition, murmur2, murmur2_partition

# Reference values of Kafka's Utils.murmur2 (org.apache.kafka.common.utils.Utils), as
# signed Java ints, from the Java client's own unit test (UtilsTest.testMurmur2).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    bytes([ord("a"), ord("b"), ord("c")]): 479470107,
}


@pytest.mark.parametrize(("key", "expected"), JAVA_MURMUR2.items())
def test_murmur2_matches_java_reference(key: bytes, expected: int) -> None:
    signed = murmur2(key) - (1 << 32) if murmur2(key) >= 1 << 31 else murmur2(key)
    assert signed == expected


def test_murmur2_partition_is_positive_mod() -> None:
    for i in range(2000):
        key = f"user.{i}".encode()
        p = murmur2_partition(key, 7)
        assert p == (murmur2(key) & 0x7FFFFFFF) % 7
        assert 0 <= p < 7


def test_crc32_partition_is_unsigned_crc_mod() -> None:
    for i in range(500):
        key = f"chan-{i}".encode()
        assert crc32_partition(key, 10) == (zlib.crc32(key) & 0xFFFFFFFF) % 10


def test_partitioners_spread_keys() -> None:
    counts = [0] * 10
    for i in range(10_000):
        counts[murmur2_partition(f"user.{i}".encode(), 10)] += 1
    assert min(counts) > 800
    assert max(counts) < 1200
