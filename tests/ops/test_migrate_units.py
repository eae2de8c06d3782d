"""Migration pieces that need no broker: checkpoint files and legacy-topic selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from channelcast.config import Settings
from channelcast.errors import ConfigError
from channelcast.ops.migrate import Checkpoint, Selection, _exclusive, migrate


def test_checkpoint_round_trips_and_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    assert Checkpoint.load(path) is None
    ck = Checkpoint(selection={"prefix": "realtime_", "pattern": None},
                    sources={("realtime_user_1", 0): 42, ("realtime_a:b", 3): 7},
                    target_floor={("realtime.user", 2): 100},
                    target_start={("realtime.user", 2): 90}, copied=52, skipped_duplicates=3)
    ck.save(path)
    assert not (tmp_path / "ck.json.tmp").exists()
    loaded = Checkpoint.load(path)
    assert loaded is not None
    assert loaded.sources == ck.sources
    assert loaded.target_floor == ck.target_floor
    assert loaded.target_start == ck.target_start
    assert (loaded.copied, loaded.skipped_duplicates, loaded.skipped_malformed) == (52, 3, 0)
    assert json.loads(path.read_text())["version"] == 1


@pytest.mark.parametrize("content", ["not json", "[]", '{"version": 99}',
                                     '{"version": 1, "selection": {}}'])
def test_a_broken_checkpoint_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "ck.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="checkpoint") as info:
        Checkpoint.load(path)
    assert info.value.key == "--checkpoint"


def test_selection_by_prefix_and_pattern() -> None:
    by_prefix = Selection(prefix="realtime_")
    assert by_prefix.matches("realtime_user_1")
    assert not by_prefix.matches("realtime.user")
    assert not by_prefix.matches("realtime")
    by_pattern = Selection(pattern=r"realtime_user_\d+")
    assert by_pattern.matches("realtime_user_12")
    assert not by_pattern.matches("realtime_user_12x")  # the whole name must match
    assert not Selection(pattern=".*").matches("__consumer_offsets")


@pytest.mark.parametrize(("kwargs", "key"), [
    ({}, "--prefix/--pattern"),
    ({"prefix": "a", "pattern": "b"}, "--prefix/--pattern"),
    ({"prefix": ""}, "--prefix"),
    ({"pattern": "("}, "--pattern"),
])
def test_bad_selections(kwargs: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Selection(**kwargs)  # type: ignore[arg-type]
    assert info.value.key == key


def test_a_second_migration_on_the_same_checkpoint_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ck.json"
    with _exclusive(checkpoint), pytest.raises(ConfigError, match="another migration"):
        migrate(Settings(), None, Selection(prefix="x_"), checkpoint)  # type: ignore[arg-type]
    with _exclusive(checkpoint):  # released again: a later run may take it
        pass
