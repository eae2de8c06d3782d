"""Driving the benchmark's own processes (:mod:`.nodes`) from the benchmark process.

:func:`child` starts ``python -m channelcast.bench.nodes MODE SPEC`` with this
interpreter and always ends it (killed on leaving, also on an error or a cancellation;
continued first if it was stopped). :class:`Child` reads its ``ready`` and result lines,
sends ``go``, and stops and continues it (SIGSTOP / SIGCONT). Nothing here knows what a
mode does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from channelcast.errors import BrokerError


@dataclass
class Child:
    """A running benchmark process (see the module docstring)."""

    mode: str
    process: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _line(self, timeout_s: float) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout_s):
            raw = await self.process.stdout.readline()
        if not raw:
            code = await self.process.wait()
            raise BrokerError(f"benchmark process {self.mode} exited ({code}) "
                              "without a result (its traceback is on stderr)")
        line = raw.decode().strip()
        if line.startswith("error: "):
            raise BrokerError(f"benchmark process {self.mode}: {line[7:]}")
        return line

    async def ready(self, timeout_s: float = 120.0) -> None:
        """Wait for its ``ready`` line."""
        while (line := await self._line(timeout_s)) != "ready":
            if line.startswith("{"):
                raise BrokerError(f"benchmark process {self.mode} finished before ready")

    def go(self) -> None:
        """Start its timed part."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    async def result(self, timeout_s: float) -> dict[str, Any]:
        """Its result line, as a dict."""
        while not (line := await self._line(timeout_s)).startswith("{"):
            pass
        data: dict[str, Any] = json.loads(line)
        return data

    def pause(self) -> None:
        """Stop it (SIGSTOP): it reads nothing until :meth:`resume`."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


@contextlib.asynccontextmanager
async def child(mode: str, spec: Mapping[str, Any]) -> AsyncIterator[Child]:
    """Start ``python -m channelcast.bench.nodes MODE SPEC`` with this interpreter; it is
    killed on leaving (also on an error or a cancellation), continued first if stopped."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "channelcast.bench.nodes", mode, json.dumps(dict(spec)),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24)
    proc = Child(mode, process)
    try:
        yield proc
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.resume()
                process.kill()
            await process.wait()
