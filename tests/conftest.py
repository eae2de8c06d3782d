"""Shared fixtures: the real Kafka broker for the suite, unique topic names, settings.

Kafka is ``$KAFKA_BOOTSTRAP`` when set (scripts/test sets it), else a broker this session
starts itself with scripts/kafka_local.py. If Kafka cannot start, Kafka tests FAIL: they
never skip.
"""

from __future__ import annotations

import gc
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import kafka_local  # noqa: E402


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if bootstrap:
        yield bootstrap
        return
    cluster = kafka_local.Cluster(name="pytest", brokers=1, port=21192)
    try:
        cluster.stop()
        bootstrap = cluster.start()
    except Exception as exc:
        pytest.fail(f"could not start the local Kafka broker: {exc}", pytrace=False)
    try:
        yield bootstrap
    finally:
        cluster.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and channel names in one test."""
    return uuid.uuid4().hex[:10]


@contextmanager
def private_cluster(name: str, port: int, brokers: int = 1) -> Iterator[kafka_local.Cluster]:
    """A Kafka cluster of the test's own (it may kill and restart nodes); stopped after.

    Ports stay below 32768: Linux hands out 32768-60999 for outgoing connections, and a
    cluster's port taken by one of those fails its start (seen here once).

    A cluster that cannot start FAILS the test, like the suite's broker.
    """
    cluster = kafka_local.Cluster(name=name, brokers=brokers, port=port)
    cluster.stop()
    try:
        cluster.start()
    except kafka_local.KafkaLocalError as exc:
        pytest.fail(f"could not start the private Kafka cluster {name!r}: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _no_frozen_heap_after_a_test() -> Iterator[None]:
    """Commands run in-process (``main(["serve", ...])``) freeze the heap as they do in
    their own process; the test process must not keep it frozen for the next tests."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()


def has_float(value: object) -> bool:
    """Whether JSON-like data holds a float anywhere (orjson may spell those differently
    from json.dumps: ``1e-7`` for ``1e-07``)."""
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(has_float(v) for v in value)
    return False
