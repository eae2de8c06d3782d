"""The ops commands' help and argument errors (no broker needed)."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from channelcast.cli.main import app, main

COMMANDS = [["topics", "plan"], ["topics", "apply"], ["migrate"], ["monitor"]]


def _command(path: list[str]) -> Any:
    """The click command object (typer may ship its own click: use duck typing)."""
    command: Any = typer.main.get_command(app)
    for name in path:
        found = command.get_command(command.context_class(command), name)
        assert found is not None, name
        command = found
    return command


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_is_complete(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    command = _command(path)
    assert len(command.help or "") > 80, "the command needs a real description"
    assert main([*path, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for param in command.params:
        if param.param_type_name != "option":
            continue
        assert param.help, f"{param.name} has no help text"
        assert param.opts[0] in out, f"{param.opts[0]} missing from --help"


@pytest.mark.parametrize("argv", [
    ["monitor", "--top", "0"],
    ["migrate", "--no-such-option"],
    ["topics", "apply", "--timeout", "soon"],
    ["topics", "nope"],
], ids=" ".join)
def test_bad_arguments_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("error: ")


def test_bad_config_is_one_line(tmp_path: object, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHANNELCAST_CONFIG", raising=False)
    assert main(["topics", "plan", "-c", "/nonexistent/channelcast.toml"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: /nonexistent/channelcast.toml")
