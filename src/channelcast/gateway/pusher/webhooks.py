"""Pusher webhooks: cluster-wide, at least once, signed.

A node that has something to report (the transitions :mod:`.cluster` makes it the
reporter of, a client event, a cache miss) publishes it on the internal channel
:data:`WEBHOOK_CHANNEL` as one record ``{"app", "events": [...]}``. Every gateway node runs
one member of the consumer group ``pusher.webhook_group`` over that channel
(``broker.worker``; on Kafka a consumer group, on the memory broker its in-process
equivalent), so each record is sent by one node: the handler POSTs
``{"time_ms", "events"}`` to the app's ``webhook_url`` with ``X-Pusher-Key`` and
``X-Pusher-Signature`` (:func:`~.signatures.webhook_signature`), and raises
:class:`~channelcast.errors.DeliveryFailed` on a network error or a status other than 2xx.
The worker commits only after success and retries with the configured back-off
(``kafka.max_attempts``, ``retry_backoff_*``), then dead-letters: at least once, so a
receiver may see an event twice. A record older than ``pusher.webhook_max_age_s`` is
dropped with a WARNING (the SDKs refuse webhooks older than five minutes).

This module sends HTTP; it never touches client connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import httpx

from channelcast.brokers.base import Broker, Worker
from channelcast.errors import DeliveryFailed
from channelcast.gateway.pusher.apps import AppRegistry, PusherApp
from channelcast.gateway.pusher.signatures import webhook_signature
from channelcast.message import Envelope, Record
from channelcast.types import ChannelName

log = logging.getLogger("channelcast.gateway.pusher")

WEBHOOK_CHANNEL = ChannelName(";pusher;webhooks")
WEBHOOK_EVENT = "pusher-webhook"


def webhook_body(events: list[dict[str, Any]], now_ms: int | None = None) -> bytes:
    """The POST body: ``{"time_ms", "events"}``."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return json.dumps({"time_ms": ms, "events": events}, separators=(",", ":"),
                      ensure_ascii=False).encode()


def webhook_headers(app: PusherApp, body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Pusher-Key": app.key,
            "X-Pusher-Signature": webhook_signature(app, body)}


class Webhooks:
    """Queue webhook events (:meth:`publish`) and send the group's share (:meth:`start`)."""

    def __init__(self, broker: Broker, apps: AppRegistry, *, group: str,
                 timeout_s: float = 5.0, max_age_s: float = 300.0) -> None:
        self.broker = broker
        self.apps = apps
        self.group = group
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self._http: httpx.AsyncClient | None = None
        self._worker: Worker | None = None
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    @property
    def needed(self) -> bool:
        return any(app.webhook_url for app in self.apps)

    async def publish(self, app: PusherApp, events: list[dict[str, Any]]) -> None:
        """Hand events over for delivery (nothing when the app has no ``webhook_url``)."""
        if not app.webhook_url or not events:
            return
        await self.broker.publish_many([Envelope(WEBHOOK_CHANNEL, WEBHOOK_EVENT,
                                                 {"app": app.id, "events": events})])

    async def start(self) -> None:
        if not self.needed:
            return
        self._http = httpx.AsyncClient(timeout=self.timeout_s)
        self._worker = self.broker.worker(self.group, channels={WEBHOOK_CHANNEL: self.send},
                                          manual_commit=True)
        self._task = asyncio.create_task(self._worker.run())

    async def close(self) -> None:
        if self._worker is not None:
            await self._worker.stop()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), 10)
            if not self._task.done():
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    async def send(self, record: Record) -> None:
        """The worker's handler: POST one record's events; raises DeliveryFailed."""
        data = record.envelope.data
        app = self.apps.by_id(str(data.get("app"))) if isinstance(data, dict) else None
        events = data.get("events") if isinstance(data, dict) else None
        if app is None or not app.webhook_url or not isinstance(events, list):
            return  # not ours to send (an app since removed from the config)
        age = time.time() - record.envelope.timestamp / 1000
        if age > self.max_age_s:
            log.warning("pusher webhook of app %s dropped: %.0f s old (limit %.0f s)", app.id,
                        age, self.max_age_s)
            return
        assert self._http is not None
        body = webhook_body(events)
        try:
            response = await self._http.post(app.webhook_url, content=body,
                                             headers=webhook_headers(app, body))
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"webhook to {app.webhook_url}: {exc!r}") from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"webhook to {app.webhook_url}: HTTP {response.status_code}")
        self.sent += 1
