"""The CLI: every command's --help works; errors are one line; config check and route."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import typer

from channelcast.cli.main import app, main
from channelcast.config import load_settings
from channelcast.strategies import create_strategy
from channelcast.types import ChannelName

EXAMPLE = resources.files("channelcast") / "examples" / "channelcast.toml"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith(("KAFKA_", "CHANNELCAST_")):
            monkeypatch.delenv(var)


@pytest.fixture
def example() -> Iterator[Path]:
    with resources.as_file(EXAMPLE) as path:
        yield path


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group in the click tree, as argv prefixes."""
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            yield from command_paths(sub, (*path, name))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("error: "), err
    assert err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


# --- help for the whole command tree --------------------------------------------------------


PATHS = list(command_paths(typer.main.get_command(app)))


def test_the_tree_has_the_foundation_commands() -> None:
    assert {("config",), ("config", "check"), ("route",)} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "channelcast")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(path: tuple[str, ...], flag: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([*path, flag], capsys)
    assert code == 0, err
    assert "Usage" in out
    assert " ".join(("channelcast", *path)) in " ".join(out.split())


def test_no_arguments_prints_help_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([], capsys)
    assert code == 2  # click's convention for no_args_is_help
    assert "Usage" in out + err
    assert "Traceback" not in out + err
    assert "route" in out + err


# --- bad arguments: one line, exit code 2 ----------------------------------------------------


@pytest.mark.parametrize(("argv", "fragments"), [
    (["route"], ["Missing argument", "channelcast route --help"]),
    (["route", "--bogus", "user.1"], ["No such option: --bogus"]),
    (["no-such-command"], ["No such command 'no-such-command'"]),
    (["config", "check", "--json", "extra"], ["unexpected extra argument"]),
    (["route", "user 1"], ["character ' ' at index 4"]),
    (["route", "user.1", ".bad"], ["must not start or end with '.'"]),
    (["route", "--strategy", "nope", "user.1"], ["--strategy: unknown strategy 'nope'"]),
])
def test_bad_arguments_print_one_error_line(argv: list[str], fragments: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2
    assert_one_line_error(err, *fragments)
    assert out == ""


@pytest.mark.parametrize(("text", "fragments"), [
    ('[kafka]\ntopic_strategy = "bogus"\n', ["kafka.topic_strategy: unknown strategy"]),
    ('[kafka.topic_mapping."user.*"]\npartitions = 3\n',
     ['kafka.topic_mapping."user.*".topic: pattern has no topic']),
    ('[kafka.topic_mapping."user.*"]\ntopic = "t"\npartitions = 0\n',
     ['kafka.topic_mapping."user.*".partitions: must be >= 1']),
    ('[kafka.topic_mapping."a.*"]\ntopic = "t"\npartitions = 1\n'
     '[kafka.topic_mapping."b.*"]\ntopic = "t"\npartitions = 2\n',
     ['kafka.topic_mapping."b.*".partitions: topic \'t\' is declared with 2']),
    ("[kafka\n", ["cannot parse config file"]),
])
@pytest.mark.parametrize("command", [["config", "check"], ["route", "user.1"]])
def test_bad_config_prints_one_error_line_naming_the_key(
        tmp_path: Path, text: str, fragments: list[str], command: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, out, err = run([*command, "--config", str(path)], capsys)
    assert code == 2
    assert_one_line_error(err, *fragments)
    assert out == ""


def test_unreadable_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.toml"
    code, _, err = run(["config", "check", "-c", str(missing)], capsys)
    assert code == 2
    assert_one_line_error(err, str(missing), "cannot read config file")


def test_bad_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch, example: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_DEFAULT_PARTITIONS", "many")
    code, _, err = run(["config", "check", "-c", str(example)], capsys)
    assert code == 2
    assert_one_line_error(err, "KAFKA_DEFAULT_PARTITIONS: must be an integer, got 'many'")


def test_config_file_from_the_environment(monkeypatch: pytest.MonkeyPatch, example: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CHANNELCAST_CONFIG", str(example))
    code, out, _ = run(["config", "check", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["source"] == str(example)


# --- config check -----------------------------------------------------------------------------


def test_config_check_prints_the_resolved_config(monkeypatch: pytest.MonkeyPatch,
                                                 example: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_MANUAL_COMMIT", "true")
    code, out, err = run(["config", "check", "-c", str(example)], capsys)
    assert code == 0, err
    header, _, body = out.partition("\n")
    assert header == f"# resolved from {example} + environment: OK"
    data = json.loads(body)
    assert data["kafka"]["manual_commit"] is True


def test_config_check_json_keeps_mapping_order_and_hides_secrets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[kafka.topic_mapping."z.*"]\ntopic = "tz"\npartitions = 1\n'
                    '[kafka.topic_mapping."a.*"]\ntopic = "ta"\npartitions = 2\n'
                    '[kafka.consumer]\n"sasl.password" = "hunter2"\n'
                    '[gateway]\napp_secret = "s3cr3t"\n')
    code, out, _ = run(["config", "check", "--json", "-c", str(path)], capsys)
    assert code == 0
    data = json.loads(out)
    assert list(data["kafka"]["topic_mapping"]) == ["z.*", "a.*"]
    assert "hunter2" not in out
    assert "s3cr3t" not in out
    assert data["gateway"]["app_secret"] == "***"
    assert load_settings(path, env={}).gateway.app_secret == "s3cr3t"


# --- route ------------------------------------------------------------------------------------


def test_route_prints_topic_partition_and_key(example: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    channels = ["user.1", "user.2", "public.news", "orders.9"]
    code, out, err = run(["route", "--json", "-c", str(example), *channels], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    strategy = create_strategy(load_settings(example, env={}).kafka)
    assert [r["channel"] for r in rows] == channels
    for row in rows:
        route = strategy.route(ChannelName(row["channel"]))
        assert (row["topic"], row["partition"], row["key"]) == (
            route.topic, route.partition, route.key.decode())
    assert [r["topic"] for r in rows] == [
        "realtime.user", "realtime.user", "realtime.public", "realtime"]


def test_route_with_the_legacy_strategy(example: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["route", "--json", "--strategy", "one-per-channel", "-c", str(example),
                        "user.1"], capsys)
    assert code == 0
    assert json.loads(out) == {"channel": "user.1", "topic": "realtime_user_1",
                               "partition": 0, "key": "user.1"}


def test_route_table_names_the_strategy(example: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["route", "-c", str(example), "public.news"], capsys)
    assert code == 0
    assert "strategy: grouped" in out
    assert "realtime.public" in out


def test_environment_picks_the_strategy(monkeypatch: pytest.MonkeyPatch, example: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_STRATEGY", "one-per-channel")
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", "legacy")
    code, out, _ = run(["route", "--json", "-c", str(example), "public.news"], capsys)
    assert code == 0
    assert json.loads(out)["topic"] == "legacy_public_news"
