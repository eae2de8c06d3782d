"""Pusher apps: who may connect with which key, and each app's flags and limits.

The default app *is* the gateway's own ``gateway.app_id``/``app_key``/``app_secret`` (with
``app_client_events`` and ``app_webhook_url``; the ``CHANNELCAST_APP_*`` variables set
them), so one secret signs for the native protocol and the default Pusher app alike and
their channels are the same. More apps come from ``[[apps]]``; each lives in its own
channel namespace (:mod:`.names`). Pure data: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from channelcast.config import Settings


@dataclass(frozen=True, slots=True)
class PusherApp:
    """One app. ``max_connections`` 0 means no limit; ``client_event_rate`` is events per
    second per connection; ``max_event_bytes`` bounds one event's ``data`` (UTF-8 bytes)."""

    id: str
    key: str
    secret: str
    client_events: bool = False
    webhook_url: str | None = None
    max_connections: int = 0
    client_event_rate: int = 10
    max_event_bytes: int = 10240
    default: bool = False

    @property
    def namespace(self) -> str:
        """What channelcast channel names of this app carry after their type prefix:
        nothing for the default app, ``;{id};`` for the others (docs/pusher.md)."""
        return "" if self.default else f";{self.id};"


class AppRegistry:
    """The apps of one gateway, by key (WebSocket) and by id (HTTP API)."""

    def __init__(self, apps: Iterable[PusherApp]) -> None:
        self._by_key: dict[str, PusherApp] = {}
        self._by_id: dict[str, PusherApp] = {}
        for app in apps:
            if app.key in self._by_key or app.id in self._by_id:
                raise ValueError(f"app {app.id} (key {app.key!r}) is declared twice")
            self._by_key[app.key] = app
            self._by_id[app.id] = app

    @classmethod
    def from_settings(cls, settings: Settings) -> AppRegistry:
        g, p = settings.gateway, settings.pusher
        apps = [PusherApp(g.app_id, g.app_key, g.app_secret, g.app_client_events,
                          g.app_webhook_url, p.max_connections, p.client_event_rate,
                          p.max_event_bytes, default=True)]
        for a in settings.apps:
            apps.append(PusherApp(
                a.id, a.key, a.secret, a.client_events, a.webhook_url,
                p.max_connections if a.max_connections is None else a.max_connections,
                p.client_event_rate if a.client_event_rate is None else a.client_event_rate,
                p.max_event_bytes))
        return cls(apps)

    def by_key(self, key: str) -> PusherApp | None:
        return self._by_key.get(key)

    def by_id(self, app_id: str) -> PusherApp | None:
        return self._by_id.get(app_id)

    def __iter__(self) -> Iterator[PusherApp]:
        return iter(self._by_id.values())
