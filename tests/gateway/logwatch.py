"""Fails a test on any ERROR log record or traceback from the gateway it did not expect.

Watched: the ``channelcast`` loggers, ``asyncio`` (``Task was destroyed but it is
pending!``, unretrieved task exceptions) and uvicorn's (``Exception in ASGI application``).
A record counts as a problem when it is ERROR or above, or carries a traceback
(``exc_info``) at any level. A test declares what it expects with the ``server_log``
fixture: ``server_log.expect(r"regex")`` allows records whose ``"logger: message"``
matches.

uvicorn's loggers are watched through a logging *filter*: every ``uvicorn.Config``
re-applies uvicorn's logging config, which removes the handlers of its loggers (filters
stay). The others get a handler.
"""

from __future__ import annotations

import gc
import logging
import re
import traceback
from collections.abc import Iterator

import pytest

HANDLER_LOGGERS = ("channelcast", "asyncio")
FILTER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "uvicorn.access")


class _Tap(logging.Filter):
    """A filter that shows every record to the watch and keeps it."""

    def __init__(self, watch: LogWatch) -> None:
        super().__init__()
        self.watch = watch

    def filter(self, record: logging.LogRecord) -> bool:
        self.watch.emit(record)
        return True


class LogWatch(logging.Handler):
    """Collects problem records from the watched loggers until :meth:`stop`."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.problems: list[logging.LogRecord] = []
        self._allowed: list[re.Pattern[str]] = []
        self._tap = _Tap(self)

    def expect(self, pattern: str) -> None:
        """Records whose ``"logger: message"`` matches ``pattern`` (re.search) are fine."""
        self._allowed.append(re.compile(pattern))

    # logging.Handler: the watched loggers call this
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.problems.append(record)

    def start(self) -> LogWatch:
        for name in HANDLER_LOGGERS:
            logging.getLogger(name).addHandler(self)
        for name in FILTER_LOGGERS:
            logging.getLogger(name).addFilter(self._tap)
        return self

    def stop(self) -> None:
        for name in HANDLER_LOGGERS:
            logging.getLogger(name).removeHandler(self)
        for name in FILTER_LOGGERS:
            logging.getLogger(name).removeFilter(self._tap)

    @staticmethod
    def describe(record: logging.LogRecord) -> str:
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + "".join(traceback.format_exception(record.exc_info[1]))
        return text

    def unexpected(self) -> list[str]:
        out = []
        for record in self.problems:
            text = self.describe(record)
            if not any(p.search(text) for p in self._allowed):
                out.append(f"{record.levelname} {text}")
        return out

    def finish(self) -> list[str]:
        """Stop watching (after a garbage collection, so destroyed pending tasks report
        themselves now) and return the unexpected problems."""
        gc.collect()
        self.stop()
        return self.unexpected()


ERROR_LINE = re.compile(r"^(ERROR|CRITICAL)\b.*$|^Traceback \(most recent call last\):$",
                        re.MULTILINE)


def unexpected_output_lines(output: str, expected: str | None = None) -> list[str]:
    """ERROR/CRITICAL lines and traceback headers in a server process's output that do
    not match ``expected`` (a regex), for tests that run ``channelcast serve``."""
    allowed = re.compile(expected) if expected else None
    return [m.group(0) for m in ERROR_LINE.finditer(output)
            if allowed is None or not allowed.search(m.group(0))]


@pytest.fixture(autouse=True)
def server_log() -> Iterator[LogWatch]:
    """Watches the gateway's logs during the test; fails it on an ERROR record or a
    traceback that it did not declare with ``server_log.expect(regex)``."""
    watch = LogWatch().start()
    try:
        yield watch
    finally:
        problems = watch.finish()
    if problems:
        pytest.fail("unexpected server log records:\n" + "\n".join(problems), pytrace=False)
