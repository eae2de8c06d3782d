"""Starting and always stopping a server process of the benchmark (a peer, or
``channelcast serve``), and reading the CPU time it used.

:func:`server_process` is an async context manager: the process starts in a temp folder
of its own with a minimal environment (``PATH``, ``PYTHONPATH``, a throwaway ``HOME``:
nothing of the caller's environment reaches a server's config), its output goes to a log
file there, and the context is entered once its port accepts connections. On leaving,
also by an error or a cancellation (Ctrl-C), the process gets SIGTERM, then SIGKILL
after ``stop_s``; the kill is synchronous, so it happens even if the wait is cancelled
again. Nothing here knows a particular server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from channelcast.errors import BrokerError


class PeerFailed(BrokerError):
    """A server of the benchmark did not start, or died."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/PID/stat``, every thread);
    NaN where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """A running server: its name, process, port and log file."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def log_tail(self, chars: int = 800) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.process.returncode is not None:
            raise PeerFailed(f"{self.name} exited with code {self.process.returncode}: "
                             f"{self.log_tail()}")


def write_file(folder: Path, name: str, text: str) -> Path:
    """``folder/name`` with ``text`` (the folder created): a server's config."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def open_log(folder: Path, name: str) -> BinaryIO:
    """A new log file ``folder/name`` for a child process's output (the folder created)."""
    folder.mkdir(parents=True, exist_ok=True)
    return (folder / name).open("wb")


def minimal_env(extra: Mapping[str, str] | None = None, home: Path | None = None
                ) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
    if os.environ.get("PYTHONPATH"):
        # Absolute: the server runs in a folder of its own, and must import the same
        # channelcast as this process (a relative "src" would silently miss it).
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(p) for p in os.environ["PYTHONPATH"].split(os.pathsep) if p)
    if home is not None:
        env["HOME"] = str(home)
    env.update(extra or {})
    return env


async def _accepting(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@contextlib.asynccontextmanager
async def server_process(name: str, argv: Sequence[str], *, port: int, workdir: Path,
                         env: Mapping[str, str] | None = None, start_s: float = 60.0,
                         stop_s: float = 10.0) -> AsyncIterator[Server]:
    """Run ``argv`` in ``workdir`` until the context exits; entered once ``port`` on
    127.0.0.1 accepts connections. Raises PeerFailed if it exits or does not listen
    within ``start_s`` seconds (with the end of its log)."""
    log_path = workdir / f"{name.split()[0].lower()}.log"
    with open_log(workdir, log_path.name) as log:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=str(workdir), stdin=asyncio.subprocess.DEVNULL, stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env) if env is not None else minimal_env(home=workdir))
    server = Server(name, process, port, log_path)
    try:
        deadline = time.monotonic() + start_s
        while not await _accepting(port):
            server.check_alive()
            if time.monotonic() > deadline:
                raise PeerFailed(f"{name} did not listen on 127.0.0.1:{port} within "
                                 f"{start_s:.0f}s: {server.log_tail()}")
            await asyncio.sleep(0.1)
        yield server
    finally:
        _stop(process)
        try:
            await asyncio.wait_for(process.wait(), stop_s)
        except TimeoutError:
            _kill(process)
            await process.wait()
        except BaseException:  # cancelled while waiting: never leave it running
            _kill(process)
            raise


def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
