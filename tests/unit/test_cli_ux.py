"""What fresh users met on the command line, in the config and in the docs (no network).

Each test fails on the behaviour the testers reported and passes on the fixed one:
``--version`` without importing the commands, ``--help`` that reads well at 80 columns,
bounded partition counts, YAML duplicate keys and parse errors naming the file, the
config file's variable named in its errors, ``--bootstrap`` checked at once, librdkafka
settings checked by ``config check``, ``--port`` validated, the publish API naming a
missing field, the bench extra's install hint, and the README's variable list.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from channelcast.cli.main import build_app, main
from channelcast.config import (
    ENV_GATEWAY,
    ENV_KAFKA,
    MAX_PARTITIONS,
    load_settings,
    parse_bootstrap,
)
from channelcast.errors import ConfigError, InvalidChannel, MessageError
from channelcast.gateway.api import parse_publish

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith(("KAFKA_", "CHANNELCAST_")):
            monkeypatch.delenv(var)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("error: "), err
    assert err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


# --- --version answers without importing the commands ------------------------------------


def test_version_imports_no_command_typer_or_pydantic() -> None:
    code = ("import sys; from channelcast.cli.main import main; code = main(['--version']); "
            "print(sorted(m for m in sys.modules if m.startswith(('channelcast.cli.', "
            "'channelcast.config', 'typer', 'click', 'pydantic', 'rich'))))")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    elapsed = time.monotonic() - started
    version_line, modules = out.splitlines()
    assert version_line.startswith("channelcast ")
    assert modules == "['channelcast.cli.main']"
    assert elapsed < 5  # generous for a loaded machine; it takes well under 0.2 s


def test_the_public_api_is_still_importable_from_the_package() -> None:
    import channelcast

    for name in channelcast.__all__:
        assert getattr(channelcast, name) is not None
    assert set(channelcast.__all__) <= set(dir(channelcast))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        channelcast.nope  # noqa: B018


# --- --help reads well at 80 columns -------------------------------------------------------


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(sub, (*path, name))


PATHS = list(command_paths(typer.main.get_command(build_app())))


HELP_WIDTH = 78
"""click wraps help text at the terminal width (at most 80) minus 2."""


def broken_lines(text: str, width: int = HELP_WIDTH) -> list[str]:
    """Lines of a help text's paragraphs that end although the next line's first word
    would still have fitted: a sentence broken by a hard-wrapped docstring. In the
    option and command lists only continuation lines count (a new row starts at the
    list's own indentation)."""
    found = []
    lines = text.splitlines()
    in_list = False
    for line, after in itertools.pairwise(lines):
        if line and not line.startswith(" ") and line.endswith(":"):
            in_list = True  # "Options:", "Commands:", "Arguments:"
            continue
        if not line.strip() or not after.strip() or line.rstrip().endswith("-"):
            continue
        indent, next_indent = (len(x) - len(x.lstrip()) for x in (line, after))
        if in_list and next_indent <= 2:
            continue  # the next row of the list
        if not in_list and next_indent != indent:
            continue
        gap = 2 if after.lstrip().startswith("[") else 1  # click: "help  [default: x]"
        if len(line.rstrip()) + gap + len(after.split()[0]) <= width:
            found.append(f"{line.rstrip()!r} / {after.strip()!r}")
    return found


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "channelcast")
def test_every_help_reads_well_at_80_columns(path: tuple[str, ...],
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run([*path, "--help"], capsys)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80
    assert broken_lines(out) == []
    assert not re.search(r"--?[\w-]+ +<bool>", out), out  # no type placeholder on a flag
    assert "<bool>" not in out
    assert "``" not in out  # no RST markup shown literally
    assert "{channels}" not in out
    assert "<list[str]>" not in out


def test_the_paragraph_check_finds_a_hard_wrapped_sentence() -> None:
    good = "  one two three\n  four"
    assert broken_lines(good, 15) == []
    bad = "  With a kafka:// broker any\n  number\n  of gateway nodes share the work."
    assert broken_lines(bad) != []
    listed = "Options:\n  --a   Some help that\n        wraps here.\n  --b   Next."
    assert broken_lines(listed) != []
    assert broken_lines(listed, 20) == []


def test_route_usage_names_its_argument(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    _, out, _ = run(["route", "--help"], capsys)
    assert "Usage: channelcast route [OPTIONS] CHANNEL..." in out
    code, _, err = run(["route"], capsys)
    assert code == 2
    one_line_error(err, "Missing argument 'CHANNEL'")


# --- serve --port ---------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["99999", "-5", "65536"])
def test_serve_refuses_a_port_out_of_range_in_one_line(port: str,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    code, out, err = run(["serve", "--port", port], capsys)
    assert code == 2
    one_line_error(err, "--port")
    assert out == ""


# --- partition counts are bounded -------------------------------------------------------------


@pytest.mark.parametrize(("text", "key"), [
    ("[kafka]\ndefault_partitions = 99999999999999999999\n", "kafka.default_partitions"),
    (f"[kafka]\ndefault_partitions = {MAX_PARTITIONS + 1}\n", "kafka.default_partitions"),
    ('[kafka.topic_mapping."user.*"]\ntopic = "u"\npartitions = 1000000000\n',
     'kafka.topic_mapping."user.*".partitions'),
])
def test_partition_counts_over_the_bound_are_refused_naming_the_key(
        tmp_path: Path, text: str, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    code, out, err = run(["config", "check", "-c", str(path)], capsys)
    assert code == 2
    one_line_error(err, f"{key}: must be <= {MAX_PARTITIONS:,} partitions",
                   "Kafka's practical limits")
    assert out == ""


def test_the_bound_itself_and_the_environment_variable(tmp_path: Path) -> None:
    ok = load_settings(env={"KAFKA_DEFAULT_PARTITIONS": str(MAX_PARTITIONS)})
    assert ok.kafka.default_partitions == MAX_PARTITIONS
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"KAFKA_DEFAULT_PARTITIONS": str(MAX_PARTITIONS + 1)})
    assert caught.value.key == "KAFKA_DEFAULT_PARTITIONS"


# --- YAML: duplicate keys, parse errors ------------------------------------------------------


@pytest.mark.parametrize(("text", "key", "line"), [
    ("kafka:\n  default_partitions: 3\n  default_partitions: 4\n", "default_partitions", 3),
    ("kafka: {}\nkafka:\n  default_partitions: 4\n", "kafka", 2),
    ("kafka:\n  topic_mapping:\n    'user.*': {topic: a, partitions: 1, topic: b}\n",
     "topic", 3),
])
def test_a_yaml_key_written_twice_is_refused_naming_key_and_file(
        tmp_path: Path, text: str, key: str, line: int) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert caught.value.key == str(path)
    assert f"line {line}," in caught.value.problem
    assert f"key {key!r} is written twice" in caught.value.problem


def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text("gateway: &base\n  port: 8001\n  host: 127.0.0.1\n"
                    "pusher:\n  enabled: true\n"
                    "kafka:\n  default_partitions: 3\n")
    assert load_settings(path, env={}).gateway.port == 8001
    merged = tmp_path / "merged.yaml"
    merged.write_text("kafka:\n  <<: {default_partitions: 3, default_topic: x}\n"
                      "  default_partitions: 4\n")
    settings = load_settings(merged, env={})
    assert (settings.kafka.default_partitions, settings.kafka.default_topic) == (4, "x")


def test_a_yaml_parse_error_is_one_line_naming_the_file_and_position(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kafka:\n  - a: [\n")
    code, _, err = run(["config", "check", "-c", str(path)], capsys)
    assert code == 2
    one_line_error(err, f"{path}: cannot parse config file: line 3, column 1:")
    assert "<unicode string>" not in err


# --- the config file's variable is named ------------------------------------------------------


def test_a_missing_config_file_from_the_variable_names_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv("CHANNELCAST_CONFIG", str(missing))
    for command in (["config", "check"], ["route", "user.1"]):
        code, _, err = run(command, capsys)
        assert code == 2
        one_line_error(err, f"error: CHANNELCAST_CONFIG={missing}: cannot read config file")
    # --config wins over the variable, and then names just the file.
    other = tmp_path / "other.toml"
    code, _, err = run(["config", "check", "-c", str(other)], capsys)
    assert code == 2
    one_line_error(err, f"error: {other}: cannot read config file")


def test_configuration_doc_shows_the_real_error_and_string_numbers() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert "`CHANNELCAST_CONFIG=/etc/cc.toml: cannot read config file: " in text
    assert '"8000"' in text  # numbers written as text are accepted, and documented


# --- --bootstrap is checked at once; config check has --timeout ------------------------------


@pytest.mark.parametrize("value", ["nonsense", "kafka://h:p", "h:0", "http://h:9092", "",
                                   "a:1,b"])
def test_a_bad_bootstrap_is_refused_at_once(value: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    for command in (["config", "check"], ["route", "user.1"]):
        code, _out, err = run([*command, "--bootstrap", value], capsys)
        assert code == 2
        one_line_error(err, "error: --bootstrap: ")
    code, _, err = run(["topics", "plan", "--brokers", value], capsys)
    assert code == 2
    one_line_error(err, "error: --brokers: ")
    assert time.monotonic() - started < 5  # no client waited out a timeout


def test_a_kafka_url_prefix_is_accepted_and_removed() -> None:
    assert parse_bootstrap("kafka://h1:9092, h2:9093", "--bootstrap") == "h1:9092,h2:9093"
    assert parse_bootstrap("127.0.0.1:19092", "-b") == "127.0.0.1:19092"


@pytest.mark.parametrize("command", [["config", "check"], ["route", "user.1"]])
def test_config_check_and_route_take_a_timeout(command: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([*command, "--timeout", "0"], capsys)
    assert code == 2  # the option exists and is range-checked
    one_line_error(err, "--timeout")


# --- config check checks the librdkafka settings -------------------------------------------------


@pytest.mark.parametrize(("table", "key"), [("producer", "kafka.producer"),
                                            ("consumer", "kafka.consumer")])
def test_config_check_refuses_librdkafka_settings_serve_would_refuse(
        tmp_path: Path, table: str, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[kafka.{table}]\n"linger.mss" = 1\n')
    code, out, err = run(["config", "check", "-c", str(path)], capsys)
    assert code == 2
    one_line_error(err, f"error: {key}: ", 'No such configuration property: "linger.mss"')
    assert out == ""
    code, out, _ = run(["config", "check", "--json", "-c", str(path)], capsys)
    assert code == 2
    assert json.loads(out)["error"]["key"] == key


def test_config_check_accepts_valid_librdkafka_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[kafka.producer]\n"linger.ms" = 1\n[kafka.consumer]\n'
                    '"fetch.min.bytes" = 2\n')
    code, out, err = run(["config", "check", "-c", str(path)], capsys)
    assert code == 0, err
    assert out.startswith(f"# resolved from {path} + environment: OK\n")


# --- the publish API names a missing field -------------------------------------------------------


@pytest.mark.parametrize(("body", "error", "text"), [
    ({"channel": "a"}, MessageError, "message.event is missing"),
    ({"event": "e"}, InvalidChannel, "message.channel is missing"),
    ({"messages": [{"channel": "a", "event": "e"}, {"channel": "a"}]}, MessageError,
     "messages[1].event is missing"),
    # tgw3 finding 11: an unknown key was ignored (a misspelt "data" published null)
    ({"channel": "a", "event": "e", "dat": 1}, MessageError,
     "message has unknown key(s) 'dat'; a message has channel, event, data and id"),
    ({"messages": [{"channel": "a", "event": "e", "foo": 1, "bar": 2}]}, MessageError,
     "messages[0] has unknown key(s) 'bar', 'foo'; a message has channel, event, data "
     "and id"),
])
def test_a_missing_publish_field_is_called_missing(body: dict[str, Any], error: type[Exception],
                                                   text: str) -> None:
    with pytest.raises(error) as caught:
        parse_publish(json.dumps(body).encode())
    assert str(caught.value) == text


# --- the bench extra's hint --------------------------------------------------------------------


def test_the_bench_extra_hint_names_the_checkout_way_first() -> None:
    code = ("import sys; sys.modules['hdrh'] = None\n"
            "try:\n    import channelcast.bench\n"
            "except ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=60).stdout
    assert ("in a checkout: scripts/install; elsewhere: pip install 'channelcast[bench]'"
            in out), out


# --- the README names every environment variable ------------------------------------------------


def test_readme_lists_every_environment_variable() -> None:
    text = (ROOT / "README.md").read_text()
    for var in [*ENV_KAFKA, *ENV_GATEWAY, "CHANNELCAST_BROKER", "CHANNELCAST_CONFIG"]:
        assert f"`{var}`" in text, f"README.md lacks {var}"


def test_brokers_doc_says_where_the_names_come_from() -> None:
    text = (ROOT / "docs" / "brokers.md").read_text()
    paragraph = text[text.index("\nImports:"):].split("\n\n")[0]
    imports = " ".join(paragraph.split())
    assert "`RetryPolicy`" in imports
    assert "`channelcast.brokers`" in imports
    assert "`Envelope`" in imports
    assert "`channelcast.message`" in imports


def test_readme_says_when_topics_apply_is_needed() -> None:
    text = " ".join((ROOT / "README.md").read_text().split())
    assert "the local broker does not auto-create topics" not in text
    assert "creates its declared topics itself" in text
    assert "min.insync.replicas" in text
