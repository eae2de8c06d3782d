"""The README's main-job command, run as a new user would: ``channelcast serve``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.e2e.conftest import CHANNELCAST, serve_process

pytestmark = pytest.mark.timeout(120)


def test_serve_demo_serves_the_demo_and_shuts_down_cleanly(tmp_path: Path) -> None:
    with serve_process(tmp_path, "--demo") as server:
        page = httpx.get(server.url + "/")
        assert page.status_code == 200
        assert "channelcast demo" in page.text
        assert "/static/channelcast.js" in page.text
        js = httpx.get(server.url + "/static/channelcast.js")
        assert js.status_code == 200
        assert "Channelcast" in js.text
        assert httpx.get(server.url + "/readyz").json()["broker"] == "memory"

        async def round_trip() -> dict[str, object]:
            async with connect(server.url.replace("http", "ws") + "/ws") as ws:
                assert json.loads(await ws.recv())["type"] == "connected"
                await ws.send(json.dumps({"type": "subscribe", "channel": "demo"}))
                assert json.loads(await ws.recv())["type"] == "subscribed"
                async with httpx.AsyncClient() as http:
                    r = await http.post(server.url + "/demo/publish",
                                        json={"channel": "demo", "event": "hi", "data": "there"})
                assert r.status_code == 200
                frame: dict[str, object] = json.loads(await asyncio.wait_for(ws.recv(), 5))
                # Shutdown while connected: told, then closed with 1001.
                server.proc.send_signal(15)
                closing = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert closing["type"] == "closing"
                with pytest.raises(Exception):  # noqa: B017,PT011 - closed by the server
                    await asyncio.wait_for(ws.recv(), 10)
                assert ws.close_code == 1001
                return frame

        frame = asyncio.run(round_trip())
        assert frame["data"] == "there"
        assert server.stop() == 0
        output = server.output()
        assert "channelcast gateway on http://127.0.0.1:" in output
        assert "app key: channelcast-key;" in output
        assert "WARNING: DEMO MODE" in output
        assert "WARNING: the default gateway.app_secret is in use" in output
        assert "channelcast-secret" not in output  # the banner never prints the secret


def test_serve_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    import subprocess

    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nslow_client_policy = "explode"\n')
    result = subprocess.run([str(CHANNELCAST), "serve", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "gateway.slow_client_policy" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_unreachable_kafka_fails_in_one_line(tmp_path: Path) -> None:
    import subprocess

    config = tmp_path / "c.toml"
    config.write_text('broker = "kafka://127.0.0.1:1"\n[kafka]\ntimeout_s = 2\n')
    result = subprocess.run([str(CHANNELCAST), "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "error: connecting to Kafka failed" in result.stderr
    assert "Traceback" not in result.stderr
    # It says what it waits for, and never claims to serve.
    assert "connecting to kafka://127.0.0.1:1 (up to 2 s; Ctrl-C stops)" in result.stderr
    assert "channelcast gateway on" not in result.stdout + result.stderr


def test_serve_is_secure_by_default_and_quiet_at_warning(tmp_path: Path) -> None:
    """No --demo: no demo page, no unsigned publish, no allow-all /auth. --log-level
    warning: no per-connection INFO lines. A real secret: no WARNING banner at all."""
    config = tmp_path / "c.toml"
    config.write_text('[gateway]\napp_secret = "not-the-default-secret"\n')
    with serve_process(tmp_path, "--config", str(config), "--log-level", "warning") as server:
        assert httpx.get(server.url + "/").json()["demo"] == "disabled"
        assert httpx.post(server.url + "/demo/publish",
                          json={"channel": "a", "event": "e"}).status_code in (404, 405)
        assert httpx.post(server.url + "/auth", json={
            "connection_id": "n.1", "channel": "private-a"}).json()["data"]["code"] == \
            "no_authorizer"

        async def connect_twice() -> None:
            for _ in range(2):
                async with connect(server.url.replace("http", "ws") + "/ws") as ws:
                    assert json.loads(await ws.recv())["type"] == "connected"

        asyncio.run(connect_twice())
        assert server.stop() == 0
    output = server.output()
    assert "app key: channelcast-key;" in output
    assert "not-the-default" not in output
    assert "WARNING" not in output
    assert "INFO" not in output  # neither uvicorn's per-connection lines nor start-up


def test_serve_refuses_the_default_secret_on_a_public_address(tmp_path: Path) -> None:
    import subprocess

    for host in ("0.0.0.0", "::", "192.0.2.1"):
        result = subprocess.run([str(CHANNELCAST), "serve", "--host", host, "--demo"],
                                capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 2, result
        assert result.stderr.startswith("error: gateway.app_secret: the default secret is "
                                        "refused"), result.stderr
        assert result.stderr.count("\n") == 1
        assert "channelcast-secret" not in result.stderr + result.stdout
