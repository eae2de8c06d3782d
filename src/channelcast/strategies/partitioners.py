"""Keyed partitioners: key bytes + partition count -> partition.

``murmur2`` is bit-for-bit Apache Kafka's Java default keyed partitioner
(``Utils.toPositive(Utils.murmur2(key)) % numPartitions``), so Java and Python producers
agree on where a channel lives. ``crc32`` (unsigned CRC-32 mod n) is what the PHP original
used, for mixed deployments.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

Partitioner = Callable[[bytes, int], int]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c) as an unsigned 32-bit value."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    end = length & ~3
    for i in range(0, end, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def murmur2_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


PARTITIONERS: dict[str, Partitioner] = {
    "murmur2": murmur2_partition,
    "crc32": crc32_partition,
}
