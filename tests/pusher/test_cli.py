"""``channelcast serve`` as a user meets it for the Pusher protocol: its help says the
protocol is there, no command's help breaks a sentence mid-line at any width, the
start-up banner names every app by id and key (never a secret), and the HTTP client's
per-request INFO lines (one per webhook) stay out of the log unless asked for."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from pathlib import Path
from typing import Any

import pusher
import pytest
import typer

from channelcast.cli.main import build_app, main
from channelcast.cli.serve import LogLevel, configure_logging
from tests.e2e.conftest import serve_process
from tests.pusher.conftest import call, webhook_receiver

pytestmark = pytest.mark.timeout(120)


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs = getattr(command, "commands", None)
    if not subs:
        return [path]
    return [p for name, sub in sorted(subs.items()) for p in _commands(sub, (*path, name))]


COMMANDS = _commands(typer.main.get_command(build_app()))


@pytest.mark.parametrize("width", [60, 80, 120])
@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_texts_wrap_as_prose(path: tuple[str, ...], width: int,
                                  capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line of a description paragraph but its last is filled to the width: a short
    line inside a paragraph is a sentence broken where the source's line ended."""
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setenv("TERM", "dumb")
    assert main([*path, "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    end = next(i for i, line in enumerate(lines)
               if i > start and line.strip() and (line.lstrip()[0] in "╭+-" or line.rstrip()
                                                   in ("Options:", "Commands:")))
    paragraphs: list[list[str]] = [[]]
    for line in lines[start:end]:
        if line.strip():
            paragraphs[-1].append(line.rstrip())
        elif paragraphs[-1]:
            paragraphs.append([])
    assert any(paragraphs), lines
    fill = min(width, 80)  # click fills help text to the terminal, at most 80 columns
    for paragraph in paragraphs:
        for line, after in itertools.pairwise(paragraph):
            next_word = after.split()[0]
            assert len(line) + 1 + len(next_word) > fill - 2, \
                f"{' '.join(path)} at {width} columns: {line!r} then {after!r}"


def test_serve_help_names_the_pusher_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for words in ("the Pusher protocol", "Pusher Channels protocol version 7", "/app/{key}",
                  "pusher-js, Laravel Echo and the Pusher server SDKs"):
        assert words in out, words


def test_the_http_clients_info_lines_show_at_debug_only() -> None:
    quiet = logging.getLogger("httpx")
    before = quiet.level
    try:
        configure_logging(LogLevel.info)
        assert not quiet.isEnabledFor(logging.INFO)
        assert quiet.isEnabledFor(logging.WARNING)
        configure_logging(LogLevel.debug)
        assert quiet.isEnabledFor(logging.INFO)
    finally:
        quiet.setLevel(before)


def test_serve_names_every_app_and_logs_no_request_per_webhook(tmp_path: Path) -> None:
    with webhook_receiver() as hooks:
        config = tmp_path / "channelcast.toml"
        config.write_text(
            '[gateway]\napp_id = "5"\napp_key = "main-key"\napp_secret = "main-secret"\n'
            f'app_webhook_url = "{hooks.url}"\n'
            '[[apps]]\nid = 42\nkey = "shop-key"\nsecret = "shop-secret"\n'
            '[[apps]]\nid = 43\nkey = "blog-key"\nsecret = "blog-secret"\n')
        with serve_process(tmp_path, "--config", str(config)) as server:
            client = pusher.Pusher(app_id="5", key="main-key", secret="main-secret",
                                   host="127.0.0.1", port=server.port, ssl=False)
            asyncio.run(_occupy(server.port, client))
            deadline = time.monotonic() + 15
            while len(hooks.events(client)) < 2:
                assert time.monotonic() < deadline, hooks.hooks
                time.sleep(0.05)
        output = server.output()
    banner = " ".join(line for line in output.splitlines()
                      if line.startswith(("channelcast gateway on", "  Pusher protocol:")))
    banner = " ".join(banner.split())
    for words in ("app 5 (key main-key, the default)", "app 42 (key shop-key)",
                  "app 43 (key blog-key)", f"ws://127.0.0.1:{server.port}/app/{{key}}"):
        assert words in banner, output
    for secret in ("main-secret", "shop-secret", "blog-secret"):
        assert secret not in output
    assert "HTTP Request" not in output, output


async def _occupy(port: int, client: pusher.Pusher) -> None:
    from websockets.asyncio.client import connect
    async with connect(f"ws://127.0.0.1:{port}/app/main-key?protocol=7") as ws:
        await ws.recv()
        await ws.send('{"event": "pusher:subscribe", "data": {"channel": "news"}}')
        await ws.recv()
        for _ in range(100):  # until the cluster state has it (then vacated on close)
            info = await call(client.channel_info, "news")
            if info.get("occupied"):
                break
        await asyncio.sleep(0.3)
