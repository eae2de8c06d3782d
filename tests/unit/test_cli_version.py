"""``channelcast --version`` / ``-V``: the installed distribution's version, and exit 0."""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from channelcast.cli.main import main, package_version


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_installed_package_version(
        flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([flag]) == 0
    out = capsys.readouterr().out
    assert out == f"channelcast {importlib.metadata.version('channelcast')}\n"
    assert re.fullmatch(r"channelcast \d+\.\d+\.\d+\S*\n", out)


def test_version_comes_before_any_command(capsys: pytest.CaptureFixture[str]) -> None:
    # Eager: printed even when a command follows, and the command does not run.
    assert main(["-V", "route", "user.1"]) == 0
    assert capsys.readouterr().out == f"channelcast {package_version()}\n"


def test_version_without_metadata_says_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert package_version() == "unknown"
