"""``channelcast migrate`` against the real broker: copy, kill -9, resume, verify."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.brokers.kafka.reader import LogWriter
from channelcast.cli.main import main
from channelcast.config import Settings, load_settings
from channelcast.errors import ConfigError, MalformedMessage
from channelcast.message import Envelope, encode
from channelcast.ops import migrate as migrate_module
from channelcast.ops.migrate import Selection, migrate, plan_migration, verify_migration
from channelcast.ops.provision import apply_plan, plan_topics
from channelcast.strategies import create_strategy, legacy_topic_name
from channelcast.types import ChannelName
from tests.ops.conftest import ConfigWriter, provisioned, target_topics
from tests.ops.legacy import fill_legacy, legacy_channels, read_targets

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


_setup = provisioned
_targets = target_topics


def _assert_exactly_once_in_order(admin: KafkaAdmin, settings: Settings,
                                  expected: dict[str, list[str]]) -> None:
    got = read_targets(admin, _targets(settings))
    assert set(got) == set(expected)
    for channel, ids in expected.items():
        assert [i for i, _ in got[channel]] == ids, channel
        assert [s for _, s in got[channel]] == list(range(len(ids))), channel


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_midway_then_resume_copies_every_id_once_in_order(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        cleanup_topics: list[str], tmp_path: Path) -> None:
    path, settings = _setup(write_config, admin)
    expected = fill_legacy(admin, f"lg{unique}", legacy_channels(50), 20_000, cleanup_topics)
    assert len(expected) == 50
    checkpoint = tmp_path / "ck.json"
    log = (tmp_path / "migrate.out").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from channelcast.cli.main import run; run()", "migrate",
         "-c", str(path), "--checkpoint", str(checkpoint), "--max-rate", "3000",
         "--batch-size", "200", "--json"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    copied_at_kill = 0
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            # the file may not be written yet, or be replaced right now
            with contextlib.suppress(FileNotFoundError, ValueError):
                copied_at_kill = json.loads(checkpoint.read_text())["copied"]
            if copied_at_kill >= 6000:
                time.sleep(0.03)  # into the next batch: written, not yet checkpointed
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the migration ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
        log.close()
    assert proc.returncode == -signal.SIGKILL
    saved = json.loads(checkpoint.read_text())
    assert 6000 <= saved["copied"] < 20_000

    report = migrate(settings, admin, Selection.legacy(settings), checkpoint)
    assert report.finished
    # every legacy message is accounted for once: checkpointed before the kill, written
    # after the kill's last checkpoint (found in the target tail and skipped), or copied now
    assert saved["copied"] + report.skipped_duplicates + report.copied == 20_000
    _assert_exactly_once_in_order(admin, settings, expected)
    result = verify_migration(settings, admin, Selection.legacy(settings), checkpoint)
    assert result.ok, result.failures[:5]
    assert sum(c.source for c in result.channels) == 20_000
    assert len(result.channels) == 50


@pytest.mark.timeout(120)
@pytest.mark.parametrize("raise_floors", [False, True], ids=["floors-at-writes",
                                                             "floors-at-ends"])
def test_rewound_checkpoint_skips_ids_already_in_target(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        cleanup_topics: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        raise_floors: bool) -> None:
    """A run killed after its writes were acked but before its checkpoint: simulated by
    restoring an older checkpoint. The resumed run must find and skip those writes,
    whether the floors were last set by our writes or raised to the partition ends."""
    if raise_floors:
        monkeypatch.setattr(migrate_module, "RAISE_FLOORS_EVERY_S", 0.0)
    _, settings = _setup(write_config, admin)
    expected = fill_legacy(admin, f"lg{unique}", legacy_channels(6), 1200, cleanup_topics)
    sel = Selection.legacy(settings)
    checkpoint, older = tmp_path / "ck.json", tmp_path / "older.json"
    first = migrate(settings, admin, sel, checkpoint, batch_size=100, limit=300)
    assert (first.copied, first.finished) == (300, False)
    if raise_floors:
        floors = json.loads(checkpoint.read_text())["target_floor"]
        assert floors == {f"{w.topic}:{w.partition}": w.high
                          for w in admin.watermarks(_targets(settings))}
    shutil.copy(checkpoint, older)
    second = migrate(settings, admin, sel, checkpoint, batch_size=100, limit=400)
    assert second.copied == 400
    shutil.copy(older, checkpoint)
    third = migrate(settings, admin, sel, checkpoint, batch_size=100)
    assert third.finished
    assert third.skipped_duplicates == 400
    assert third.copied == 1200 - 300 - 400
    _assert_exactly_once_in_order(admin, settings, expected)
    assert verify_migration(settings, admin, sel, checkpoint).ok


@pytest.mark.timeout(120)
def test_dry_run_counts_and_routes_and_copies_nothing(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        cleanup_topics: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, settings = _setup(write_config, admin)
    expected = fill_legacy(admin, f"lg{unique}", legacy_channels(4), 200, cleanup_topics)
    plan = plan_migration(settings, admin, Selection.legacy(settings))
    strategy = create_strategy(settings.kafka)
    assert plan.messages == 200
    rows = {s.channel: s for s in plan.sources}
    assert set(rows) == set(expected)
    for channel, row in rows.items():
        assert row.messages == len(expected[channel])
        route = strategy.route(ChannelName(channel))
        assert (row.target, row.target_partition) == (route.topic, route.partition)

    checkpoint = tmp_path / "ck.json"
    assert main(["migrate", "-c", str(path), "--dry-run", "--json",
                 "--checkpoint", str(checkpoint)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plan"]["messages"] == 200
    assert not checkpoint.exists()
    assert sum(w.high for w in admin.watermarks(_targets(settings))) == 0


@pytest.mark.timeout(120)
def test_cli_copies_verifies_and_reruns_as_noop(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        cleanup_topics: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, settings = _setup(write_config, admin)
    expected = fill_legacy(admin, f"lg{unique}", legacy_channels(5), 500, cleanup_topics)
    checkpoint = str(tmp_path / "ck.json")
    assert main(["migrate", "-c", str(path), "--checkpoint", checkpoint, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["migration"]["copied"] == 500
    assert data["verify"]["ok"] is True
    assert data["verify"]["source_messages"] == data["verify"]["target_messages"] == 500
    assert main(["migrate", "-c", str(path), "--checkpoint", checkpoint, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["migration"]["copied"] == 0
    _assert_exactly_once_in_order(admin, settings, expected)
    # the table form shows a progress bar and the verification line
    assert main(["migrate", "-c", str(path), "--checkpoint", checkpoint]) == 0
    assert "verification passed" in capsys.readouterr().out


@pytest.mark.timeout(120)
def test_malformed_legacy_message_stops_with_its_position_and_loses_nothing(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        cleanup_topics: list[str], tmp_path: Path) -> None:
    _, settings = _setup(write_config, admin)
    channels = legacy_channels(3)
    fill_legacy(admin, f"lg{unique}", channels, 60, cleanup_topics)
    bad_topic = legacy_topic_name(f"lg{unique}", channels[0])
    with LogWriter(admin.bootstrap) as writer:
        writer.write(bad_topic, 0, b"k", b"not json", [])
        env = Envelope(ChannelName(channels[0]), "tick", {"seq": -1})
        writer.write(bad_topic, 0, channels[0].encode(), encode(env), [])
        writer.flush()
    sel = Selection.legacy(settings)
    checkpoint = tmp_path / "ck.json"
    with pytest.raises(MalformedMessage, match=f"{bad_topic}:0:"):
        migrate(settings, admin, sel, checkpoint)
    report = migrate(settings, admin, sel, checkpoint, skip_malformed=True)
    assert report.finished
    assert report.skipped_malformed == 1
    assert report.malformed_positions[0].startswith(f"{bad_topic}:0:")
    got = read_targets(admin, _targets(settings))
    assert sum(len(v) for v in got.values()) == 61
    assert got[channels[0]][-1][0] == env.id
    assert verify_migration(settings, admin, sel, checkpoint).ok


@pytest.mark.timeout(120)
def test_follow_mode_copies_messages_arriving_during_cutover(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        cleanup_topics: list[str], tmp_path: Path) -> None:
    _, settings = _setup(write_config, admin)
    channels = legacy_channels(3)
    fill_legacy(admin, f"lg{unique}", channels, 30, cleanup_topics)
    stop = threading.Event()
    seen: list[int] = []
    reports = []
    runner = threading.Thread(target=lambda: reports.append(migrate(
        settings, admin, Selection.legacy(settings), tmp_path / "ck.json", follow=True,
        stop=stop, on_progress=lambda p: seen.append(p.copied))))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while (not seen or seen[-1] < 30) and time.monotonic() < deadline:
            time.sleep(0.05)
        late = Envelope(ChannelName(channels[1]), "late", {"seq": -1})
        with LogWriter(admin.bootstrap) as writer:
            writer.write(legacy_topic_name(f"lg{unique}", channels[1]), 0,
                         channels[1].encode(), encode(late), [])
            writer.flush()
        while seen[-1] < 31 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(30)
    assert reports[0].copied == 31
    got = read_targets(admin, _targets(settings))
    assert got[channels[1]][-1][0] == late.id


def test_bad_arguments_are_one_line_errors(
        write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write_config())
    with pytest.raises(ConfigError, match="exactly one"):
        Selection(prefix="a", pattern="b")
    with pytest.raises(ConfigError, match="regular expression"):
        Selection(pattern="(")
    assert main(["migrate", "-c", path, "--pattern", "(", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("error: --pattern")
    assert main(["migrate", "-c", path, "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "batch-size" in err


def test_missing_or_mismatched_targets_are_refused(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        cleanup_topics: list[str], tmp_path: Path) -> None:
    settings = load_settings(write_config(), env={})
    fill_legacy(admin, f"lg{unique}", legacy_channels(2), 20, cleanup_topics)
    sel = Selection.legacy(settings)
    with pytest.raises(ConfigError, match="topics apply"):
        migrate(settings, admin, sel, tmp_path / "ck.json")
    apply_plan(plan_topics(settings, admin), admin)
    admin.add_partitions(f"ops.user.{unique}", 5)  # the config still says 4
    with pytest.raises(ConfigError, match="5 partitions on the cluster"):
        migrate(settings, admin, sel, tmp_path / "ck.json")
    assert not (tmp_path / "ck.json").exists()


@pytest.mark.timeout(120)
def test_cli_follow_stops_cleanly_on_sigterm(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        cleanup_topics: list[str], tmp_path: Path) -> None:
    path, settings = _setup(write_config, admin)
    expected = fill_legacy(admin, f"lg{unique}", legacy_channels(3), 90, cleanup_topics)
    checkpoint = tmp_path / "ck.json"
    out = tmp_path / "follow.out"
    with out.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from channelcast.cli.main import run; run()", "migrate",
             "-c", str(path), "--checkpoint", str(checkpoint), "--follow", "--json"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            copied = 0
            while copied < 90 and time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(FileNotFoundError, ValueError):
                    copied = json.loads(checkpoint.read_text())["copied"]
                time.sleep(0.05)
            assert proc.poll() is None, out.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, out.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    data = json.loads(out.read_text())
    assert data["migration"]["copied"] == 90
    assert data["verify"]["ok"] is True
    _assert_exactly_once_in_order(admin, settings, expected)


def test_a_refused_run_draws_no_progress_bar(
        write_config: ConfigWriter, admin: KafkaAdmin, unique: str,
        cleanup_topics: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """tkafka3 finding 11: the bar was drawn, then `error: --checkpoint: ...`."""
    path, _settings = _setup(write_config, admin)
    fill_legacy(admin, f"lg{unique}", legacy_channels(1), 5, cleanup_topics)
    checkpoint = tmp_path / "ck.json"
    checkpoint.write_text('{"not": "a checkpoint"}')
    assert main(["migrate", "-c", str(path), "--checkpoint", str(checkpoint)]) == 2
    out, err = capsys.readouterr()
    assert "--checkpoint" in err
    assert "messages" not in out, out
