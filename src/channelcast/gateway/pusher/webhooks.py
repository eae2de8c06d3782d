"""Pusher webhooks: cluster-wide, at least once, signed, and one app's receiver never
holds up another app's.

A node that has something to report (the transitions :mod:`.cluster` makes it the
reporter of, a client event, a cache miss) publishes it on the app's own internal channel
:func:`webhook_channel` (``;pusher;webhooks;{app id}``) as one record
``{"app", "time_ms", "events": [...]}``; ``time_ms`` is when the events happened (Unix
milliseconds), fixed in the record, so it is the same on every attempt.

Each app with a ``webhook_url`` has its own consumer group, ``{pusher.webhook_group}.{app
id}``, over its own channel; every gateway node runs one member of each (``broker.worker``;
on Kafka a consumer group, on the memory broker its in-process equivalent), so each record
is sent by one node. A group processes its app's records in order and commits one only
after it was delivered (a 2xx answer) or dead-lettered; another app's group never waits
for it, even when their channels share a partition (each group skips the other apps'
records). The handler POSTs ``{"time_ms", "events"}`` to the app's ``webhook_url`` with
``X-Pusher-Key`` and ``X-Pusher-Signature`` (:func:`~.signatures.webhook_signature`) and
raises :class:`~channelcast.errors.DeliveryFailed` on a network error, a status other than
2xx, or no complete answer within ``pusher.webhook_timeout_s`` (the whole POST). The
worker retries with :func:`retry_policy` (``pusher.webhook_max_attempts`` attempts,
back-off from ``webhook_retry_backoff_s`` doubling up to ``webhook_retry_backoff_max_s``),
then dead-letters the record (``kafka.dead_letter_topic``). At least once, so a receiver
may see an event twice. A record whose events are older than ``pusher.webhook_max_age_s``
is dropped with a WARNING instead (the SDKs refuse webhooks more than five minutes old).

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

from channelcast.brokers.base import Broker, RetryPolicy, Worker, WorkerStats
from channelcast.config import PusherSettings
from channelcast.errors import DeliveryFailed
from channelcast.gateway.pusher.apps import AppRegistry, PusherApp
from channelcast.gateway.pusher.signatures import webhook_signature
from channelcast.message import Envelope, Record
from channelcast.types import ChannelName

log = logging.getLogger("channelcast.gateway.pusher")

WEBHOOK_CHANNEL_PREFIX = ";pusher;webhooks;"
WEBHOOK_EVENT = "pusher-webhook"


def webhook_channel(app: PusherApp) -> ChannelName:
    """The internal channel that carries ``app``'s webhooks: ``;pusher;webhooks;{id}``."""
    return ChannelName(f"{WEBHOOK_CHANNEL_PREFIX}{app.id}")


def webhook_group(settings: PusherSettings, app: PusherApp) -> str:
    """The consumer group that sends ``app``'s webhooks: ``{webhook_group}.{id}``."""
    return f"{settings.webhook_group}.{app.id}"


def retry_policy(settings: PusherSettings) -> RetryPolicy:
    """``pusher.webhook_max_attempts`` attempts; before attempt n+1 the sender waits
    ``min(webhook_retry_backoff_s * 2**(n-1), webhook_retry_backoff_max_s)`` seconds.
    The defaults (10; 0.5 s up to 30 s) keep trying for about two minutes."""
    return RetryPolicy(settings.webhook_max_attempts, settings.webhook_retry_backoff_s,
                       settings.webhook_retry_backoff_max_s)


def now_ms() -> int:
    return int(time.time() * 1000)


def webhook_body(events: list[dict[str, Any]], time_ms: int | None = None) -> bytes:
    """The POST body: ``{"time_ms", "events"}``; ``time_ms`` defaults to now."""
    ms = now_ms() if time_ms is None else time_ms
    return json.dumps({"time_ms": ms, "events": events}, separators=(",", ":"),
                      ensure_ascii=False).encode()


def webhook_headers(app: PusherApp, body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Pusher-Key": app.key,
            "X-Pusher-Signature": webhook_signature(app, body)}


class Webhooks:
    """Queue webhook events (:meth:`publish`) and send this node's share (:meth:`start`)."""

    def __init__(self, broker: Broker, apps: AppRegistry, settings: PusherSettings) -> None:
        self.broker = broker
        self.apps = apps
        self.settings = settings
        self.retry = retry_policy(settings)
        self.timeout_s = settings.webhook_timeout_s
        self.max_age_s = settings.webhook_max_age_s
        self._http: httpx.AsyncClient | None = None
        self._workers: dict[str, Worker] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.sent = 0

    @property
    def senders(self) -> list[PusherApp]:
        """The apps whose webhooks this node helps send (those with a ``webhook_url``)."""
        return [app for app in self.apps if app.webhook_url]

    def stats(self) -> dict[str, WorkerStats]:
        """This node's sender of each app (by app id): records sent, failed attempts,
        dead-lettered."""
        return {app_id: worker.stats for app_id, worker in self._workers.items()}

    async def publish(self, app: PusherApp, events: list[dict[str, Any]], *,
                      time_ms: int | None = None) -> None:
        """Hand events over for delivery (nothing when the app has no ``webhook_url``).
        ``time_ms``: when they happened (Unix ms; default now)."""
        if not app.webhook_url or not events:
            return
        data = {"app": app.id, "time_ms": now_ms() if time_ms is None else time_ms,
                "events": events}
        await self.broker.publish_many([Envelope(webhook_channel(app), WEBHOOK_EVENT, data)])

    async def start(self) -> None:
        senders = self.senders
        if not senders:
            return
        self._http = httpx.AsyncClient(timeout=self.timeout_s)
        for app in senders:
            worker = self.broker.worker(webhook_group(self.settings, app),
                                        channels={webhook_channel(app): self.send},
                                        manual_commit=True, retry=self.retry)
            self._workers[app.id] = worker
            self._tasks.append(asyncio.create_task(self._run(app, worker)))

    @staticmethod
    async def _run(app: PusherApp, worker: Worker) -> None:
        try:
            await worker.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("pusher webhooks of app %s: the sender stopped: %s", app.id, exc)

    async def close(self) -> None:
        for worker in self._workers.values():
            await worker.stop()
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(asyncio.gather(
                    *self._tasks, return_exceptions=True)), 10)
            for task in self._tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    async def send(self, record: Record) -> None:
        """The worker's handler: POST one record's events; raises DeliveryFailed."""
        data = record.envelope.data
        app = self.apps.by_id(str(data.get("app"))) if isinstance(data, dict) else None
        events = data.get("events") if isinstance(data, dict) else None
        if app is None or not app.webhook_url or not isinstance(events, list) \
                or record.channel != webhook_channel(app):
            return  # not ours to send (an app since removed from the config)
        assert isinstance(data, dict)
        time_ms = data.get("time_ms")
        if not isinstance(time_ms, int) or isinstance(time_ms, bool):
            time_ms = record.envelope.timestamp
        age = time.time() - time_ms / 1000
        if age > self.max_age_s:
            log.warning("pusher webhook of app %s dropped: %.0f s old (limit %.0f s)", app.id,
                        age, self.max_age_s)
            return
        assert self._http is not None
        body = webhook_body(events, time_ms)
        try:
            # The whole POST, not each read: a receiver that trickles its answer is cut too.
            async with asyncio.timeout(self.timeout_s):
                response = await self._http.post(app.webhook_url, content=body,
                                                 headers=webhook_headers(app, body))
        except TimeoutError as exc:
            raise DeliveryFailed(f"webhook to {app.webhook_url}: no answer within "
                                 f"{self.timeout_s} s") from exc
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"webhook to {app.webhook_url}: {exc!r}") from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"webhook to {app.webhook_url}: HTTP {response.status_code}")
        self.sent += 1
