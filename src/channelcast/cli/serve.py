"""``channelcast serve``: run the gateway (the demo page at http://HOST:PORT/ with --demo).

Owns the command's options, its start-up banner (:func:`banner`: where it listens and
every Pusher app's id and key, never a secret) and its logging set-up
(:func:`configure_logging`); the gateway itself is :mod:`channelcast.gateway.server`'s.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from enum import StrEnum
from typing import Annotated

import typer

from channelcast.cli.options import ConfigOption, settings_from
from channelcast.config import Settings

QUIET_LIBRARIES = ("httpx", "httpcore")
"""Libraries whose INFO lines (one per webhook POST) only show with --log-level debug."""


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def serve(config: ConfigOption = None,
          host: Annotated[str | None, typer.Option(
              help="Interface to listen on (default: gateway.host, 127.0.0.1).")] = None,
          port: Annotated[int | None, typer.Option(
              help="Port (default: gateway.port, 8000).")] = None,
          demo: Annotated[bool, typer.Option(
              "--demo", help="Serve the demo page, its unsigned publish endpoint and an "
              "allow-all /auth (same as gateway.demo = true). Never in production.")] = False,
          log_level: Annotated[LogLevel, typer.Option(
              help="Log level; at warning, the per-connection INFO lines are quiet. The "
              "HTTP client's per-request lines (webhooks) show at debug only.")
          ] = LogLevel.info,
          access_log: Annotated[bool, typer.Option(
              "--access-log/--no-access-log", help="One line per HTTP request.")] = False,
          ) -> None:
    """Run the realtime gateway: WebSocket, SSE, the Pusher protocol and the HTTP API.

    Clients use channelcast's own protocol (WebSocket at /ws, SSE) or the Pusher Channels
    protocol version 7 on the same port: pusher-js, Laravel Echo and the Pusher server
    SDKs connect to /app/{key} and /apps/{id}/... with the apps of the config (the
    default app is gateway.app_id, app_key and app_secret; more come from its list of
    apps).

    With no config it uses the embedded memory broker; with a kafka:// broker any number
    of gateway nodes share the work. SIGINT/SIGTERM shut it down gracefully. The default
    app secret is refused on any address but loopback.
    """
    from channelcast.gateway.server import serve as run
    from channelcast.gateway.server import startup_check
    from channelcast.runtime import freeze_startup_heap

    settings = settings_from(config)
    if demo:
        settings = replace(settings, gateway=replace(settings.gateway, demo=True))
    h = host or settings.gateway.host
    p = settings.gateway.port if port is None else port
    warnings = startup_check(settings, h)  # ConfigError: one line, exit 2
    configure_logging(log_level)
    for line in banner(settings, h, p):
        typer.echo(line)
    log = logging.getLogger("channelcast.gateway")
    for warning in warnings:
        log.warning(warning)
    freeze_startup_heap()  # shorter garbage-collector pauses (see channelcast.runtime)
    try:
        run(settings, host=host, port=port, log_level=log_level.value, access_log=access_log)
    except KeyboardInterrupt:  # Ctrl-C before the server took over the signals
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def configure_logging(level: LogLevel) -> None:
    """The root logger at ``level``; :data:`QUIET_LIBRARIES` at WARNING unless ``debug``."""
    logging.basicConfig(level=level.value.upper(), format="%(levelname)s: %(message)s")
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level is LogLevel.debug else logging.WARNING)


def banner(settings: Settings, host: str, port: int) -> list[str]:
    """What ``serve`` prints at start: where it listens, the broker, and every Pusher app
    by id and key (secrets never)."""
    g = settings.gateway
    lines = [f"channelcast gateway on http://{host}:{port}/  (broker: {settings.broker}; "
             f"app key: {g.app_key}; Ctrl-C to stop)"]
    if not settings.pusher.enabled:
        lines.append("  Pusher protocol: off (pusher.enabled = false)")
        return lines
    apps = [f"app {g.app_id} (key {g.app_key}, the default)"]
    apps += [f"app {a.id} (key {a.key})" for a in settings.apps]
    lines.append(f"  Pusher protocol: ws://{host}:{port}/app/{{key}} and "
                 f"http://{host}:{port}/apps/{{id}}/...; {len(apps)} "
                 f"app{'s' if len(apps) > 1 else ''}: {', '.join(apps)}")
    return lines


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
