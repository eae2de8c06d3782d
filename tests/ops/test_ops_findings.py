"""What the Kafka tester found in the ops tools, against the real broker.

``migrate`` reads legacy records as every consumer does (the PHP original's own records,
with fractional-second timestamps, included) and counts what it copied before an error;
its dry run checks the target topics as the real run does; ``config check --bootstrap``
lists missing topics instead of calling them fine; ``route --json`` notes are plain text;
``monitor --group`` names a group without committed offsets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.brokers.kafka.reader import LogWriter, read_ranges
from channelcast.cli.main import main
from channelcast.config import load_settings
from channelcast.errors import ConfigError, MalformedMessage
from channelcast.ingest import derived_id
from channelcast.message import decode
from channelcast.ops.migrate import Progress, Selection, migrate, plan_migration, verify_migration
from channelcast.ops.provision import apply_plan, plan_topics
from channelcast.strategies import TopicSpec, legacy_topic_name, murmur2_partition
from channelcast.types import TopicName
from tests.ops.conftest import ConfigWriter, provisioned, target_topics

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


_setup = provisioned
_targets = target_topics


def _php_value(channel: str, n: int, ts: float, mid: str | None) -> bytes:
    """A record as the PHP original wrote it: the envelope, a float timestamp in seconds
    (``microtime(true)``), no headers."""
    envelope = {"type": "message", "channel": channel, "event": "tick",
                "data": {"seq": n}, "timestamp": ts}
    if mid is not None:
        envelope = {"id": mid, **envelope}
    return json.dumps(envelope).encode()


def _write(admin: KafkaAdmin, topic: str, records: list[tuple[bytes | None, bytes]],
           cleanup: list[str]) -> list[int]:
    """Create ``topic`` (one partition) and write (key, value) records; their offsets."""
    cleanup.append(topic)
    admin.create_topics([TopicSpec(TopicName(topic), 1, 1)])
    with LogWriter(admin.bootstrap, timeout_s=30) as writer:
        for key, value in records:
            writer.write(topic, 0, key or b"", value, [])
        offsets = [d.offset for d in writer.flush()]
    return sorted(offsets)


# --- migrate reads what consumers read ------------------------------------------------------


def test_migrate_copies_the_originals_records_as_consumers_read_them(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        cleanup_topics: list[str], tmp_path: Path) -> None:
    _, settings = _setup(write_config, admin)
    channel = "user.7"
    topic = legacy_topic_name(f"lg{unique}", channel)
    stamps = [1764201600.25 + i for i in range(12)]
    records = [(channel.encode(), _php_value(channel, i, ts, f"php-{i}" if i % 2 else None))
               for i, ts in enumerate(stamps)]
    offsets = _write(admin, topic, records, cleanup_topics)
    sel = Selection.legacy(settings)
    checkpoint = tmp_path / "ck.json"

    report = migrate(settings, admin, sel, checkpoint)
    assert (report.copied, report.skipped_malformed, report.finished) == (12, 0, True)
    marks = {(w.topic, w.partition): (w.low, w.high) for w in admin.watermarks(
        _targets(settings))}
    copied = [decode(m.value) for m in read_ranges(admin.bootstrap, marks, timeout_s=30)]
    assert [e.data for e in copied] == [{"seq": i} for i in range(12)]
    assert [e.timestamp for e in copied] == [round(ts * 1000) for ts in stamps]
    # An id the record had is kept; one it lacked is derived from its position (so a
    # rerun or a verification finds the same id), as every consumer derives it.
    legacy = list(read_ranges(admin.bootstrap, {(topic, 0): (offsets[0], offsets[-1] + 1)},
                              timeout_s=30))
    for i, (env, raw) in enumerate(zip(copied, legacy, strict=True)):
        assert env.id == (f"php-{i}" if i % 2 else
                          derived_id(topic, 0, raw.offset, raw.timestamp_ms))
    assert verify_migration(settings, admin, sel, checkpoint).ok
    assert migrate(settings, admin, sel, checkpoint).copied == 0  # nothing twice


def test_migrate_counts_what_it_copied_before_a_malformed_record(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        cleanup_topics: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path, settings = _setup(write_config, admin)
    channel = "user.3"
    topic = legacy_topic_name(f"lg{unique}", channel)
    records: list[tuple[bytes | None, bytes]] = [
        (channel.encode(), _php_value(channel, i, 1764201600.5, None)) for i in range(100)]
    records.append((b"\xff", b"not json"))
    records.extend((channel.encode(), _php_value(channel, i, 1764201601.5, None))
                   for i in range(100, 151))
    _write(admin, topic, records, cleanup_topics)
    progress: list[Progress] = []
    with pytest.raises(MalformedMessage, match=f"{topic}:0:100: not JSON"):
        migrate(settings, admin, Selection.legacy(settings), tmp_path / "ck.json",
                on_progress=progress.append)
    assert progress[-1].copied == 100
    assert progress[-1].total == 151 + 1

    # The command line shows the same count next to the one-line error.
    assert main(["migrate", "-c", str(path), "--checkpoint", str(tmp_path / "ck2.json"),
                 "--no-verify"]) == 2
    out, err = capsys.readouterr()
    assert "100/152" in out
    assert err.startswith(f"error: {topic}:0:100: not JSON")


# --- the dry run checks the targets as the real run does -------------------------------------


def test_dry_run_refuses_as_the_real_run_would_and_shows_real_partitions(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        cleanup_topics: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config()
    settings = load_settings(path, env={})
    channel = "user.11"
    _write(admin, legacy_topic_name(f"lg{unique}", channel),
           [(channel.encode(), _php_value(channel, 0, 1764201600.0, None))], cleanup_topics)
    sel = Selection.legacy(settings)

    missing = plan_migration(settings, admin, sel)  # no target topics yet
    assert isinstance(missing.problem, ConfigError)
    assert "does not exist" in str(missing.problem)

    apply_plan(plan_topics(settings, admin), admin)
    user = f"ops.user.{unique}"
    admin.add_partitions(user, 7)  # the config still says 4
    plan = plan_migration(settings, admin, sel)
    assert plan.problem is not None
    assert "7 partitions on the cluster but the config says 4" in str(plan.problem)
    [row] = plan.sources
    assert (row.target, row.target_partition) == (user, murmur2_partition(b"user.11", 7))
    with pytest.raises(ConfigError, match="7 partitions on the cluster"):
        migrate(settings, admin, sel, tmp_path / "ck.json")  # the real run: the same

    assert main(["migrate", "-c", str(path), "--dry-run", "--json"]) == 2
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert "7 partitions on the cluster" in data["plan"]["problem"]
    assert data["plan"]["sources"][0]["target_partition"] == row.target_partition
    [line] = err.strip().splitlines()
    assert line.startswith("error: kafka.topic_mapping: target topic")


# --- config check --bootstrap and route --bootstrap -------------------------------------------


def test_config_check_lists_missing_topics_and_prints_ok_only_when_ok(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str, kafka_bootstrap: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write_config())
    assert main(["config", "check", "-c", path, "--bootstrap", kafka_bootstrap]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    header = out.splitlines()[0]
    assert "OK" not in header
    for topic, count in ((f"ops.user.{unique}", 4), (f"ops.public.{unique}", 2),
                         (f"ops.default.{unique}", 3)):
        assert (f"# note: topic {topic!r} does not exist; channelcast creates it with "
                f"{count} partitions on first use, or run `channelcast topics apply`") in out
    assert out.splitlines()[-1].startswith(f"# OK: no declared topic on {kafka_bootstrap}")
    assert main(["config", "check", "-c", path, "--bootstrap", kafka_bootstrap,
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {m["topic"] for m in data["missing"]} == {
        f"ops.user.{unique}", f"ops.public.{unique}", f"ops.default.{unique}"}
    assert data["disagreements"] == []

    # A topic with another count: an error, and no OK line.
    admin.create_topics([TopicSpec(TopicName(f"ops.user.{unique}"), 6, 1)])
    assert main(["config", "check", "-c", path, "--bootstrap", f"kafka://{kafka_bootstrap}",
                 "--timeout", "20"]) == 1
    out, err = capsys.readouterr()
    assert "# OK" not in out
    assert f"topic 'ops.user.{unique}' has 6 partitions" in err

    assert main(["route", "-c", path, "--bootstrap", kafka_bootstrap, "--json",
                 "user.1", "public.1"]) == 0
    user, public = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    configured = murmur2_partition(b"user.1", 4)
    real = murmur2_partition(b"user.1", 6)
    if configured != real:
        assert user["note"] == (f"config says partition {configured} (of 4); the topic has "
                                "6 partitions")
    else:
        assert user["note"] == ("the topic has 6 partitions, the config 4 (the same "
                                "partition either way)")
    assert public["note"] == "no such topic"


# --- monitor names a group without offsets ----------------------------------------------------


def test_monitor_names_a_group_without_committed_offsets(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _setup(write_config, admin)
    group = f"nosuchgroup-{unique}"
    assert main(["monitor", "-c", str(path), "--json", "--group", group]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["lag"] == []
    assert data["groups_without_offsets"] == [group]
    assert main(["monitor", "-c", str(path), "--group", group, "--sample", "0"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (f"group {group!r}: no committed offsets on these topics (an unknown group, or "
            "one that never committed)") in out
    # Without --group (every group with offsets), nothing to report.
    assert main(["monitor", "-c", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["groups_without_offsets"] == []


def test_monitor_refuses_a_named_topic_that_does_not_exist_and_hides_junk_channels(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """tkafka3 finding 8: `--topic no.such` was silently left out (exit 0); a record's
    invalid channel header or non-UTF-8 key was listed as a hot channel."""
    from confluent_kafka import Producer

    path, settings = _setup(write_config, admin)
    [topic, *_] = _targets(settings)
    assert main(["monitor", "-c", str(path), "--topic", topic, "--topic",
                 f"no.such.{unique}", "--no-lag"]) == 2
    err = capsys.readouterr().err
    assert f"no such topic on the cluster: 'no.such.{unique}'" in err
    producer = Producer({"bootstrap.servers": admin.bootstrap})
    producer.produce(topic, b"{}", b"\xffw.1", partition=0)
    producer.produce(topic, b"{}", b"k", headers=[("channel", b"w 1 has spaces")],
                     partition=0)
    producer.produce(topic, b"{}", b"user.1", partition=0)
    assert producer.flush(30) == 0
    assert main(["monitor", "-c", str(path), "--topic", topic, "--no-lag", "--json"]) == 0
    hot = {h["channel"] for h in json.loads(capsys.readouterr().out)["hot_channels"]}
    assert "user.1" in hot
    assert "k" in hot  # the key, since the header is no channel name
    assert not any(" " in c or "\ufffd" in c for c in hot if not c.startswith("(")), hot


def test_bootstrap_forms_are_checked_before_any_connection(
        write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write_config())
    for argv in (["config", "check", "-c", path, "--bootstrap", "nonsense"],
                 ["route", "-c", path, "--bootstrap", "kafka://h:p", "user.1"],
                 ["monitor", "-c", path, "--brokers", "h"]):
        assert main(argv) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert "is not host:port" in line
