"""The Kafka acceptance tests watch the logs too: any ERROR record or traceback a test
did not declare (``server_log.expect``) fails it (tests.gateway.logwatch)."""

from __future__ import annotations

from tests.gateway.logwatch import server_log

__all__ = ["server_log"]
