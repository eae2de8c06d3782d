"""End-to-end helpers: ``channelcast serve`` as a real process, as a user would run it.

Both kinds of server are watched for errors: in-process logs by the autouse ``server_log``
fixture, a ``channelcast serve`` process by :func:`serve_process`, which fails the test if
the process printed an ERROR line or a traceback that the test did not expect."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.gateway.logwatch import server_log, unexpected_output_lines

__all__ = ["server_log"]  # the autouse log watch (tests.gateway.logwatch)

ROOT = Path(__file__).resolve().parents[2]
CHANNELCAST = ROOT / ".venv" / "bin" / "channelcast"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServeProcess:
    proc: subprocess.Popen[str]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@contextmanager
def serve_process(tmp_path: Path, *args: str, env: Mapping[str, str] | None = None,
                  port: int | None = None, ready_s: float = 30,
                  expect_errors: str | None = None) -> Iterator[ServeProcess]:
    """``channelcast serve --port P ARGS`` until the block ends (then SIGTERM). Fails the
    test if its output holds an ERROR line or a traceback not matching ``expect_errors``."""
    port = port or free_port()
    log = tmp_path / f"serve-{port}.log"
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("CHANNELCAST_", "KAFKA_"))}
    full_env.update(env or {})
    with log.open("w") as out:
        proc = subprocess.Popen([str(CHANNELCAST), "serve", "--port", str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT, text=True, env=full_env,
                                cwd=tmp_path)
    running = ServeProcess(proc, port, log)
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"channelcast serve exited early:\n{running.output()}")
            try:
                if httpx.get(f"{running.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"channelcast serve not ready:\n{running.output()}")
            time.sleep(0.1)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    problems = unexpected_output_lines(running.output(), expect_errors)
    if problems:
        pytest.fail(f"channelcast serve logged errors: {problems}\n{running.output()}",
                    pytrace=False)
