"""``channelcast serve``: run the gateway (the demo page at http://HOST:PORT/ with --demo).

Thin: the start-up order, the signals and the shutdown are
:func:`channelcast.gateway.server.serve`'s; this module checks the options, sets up
logging (:func:`configure_logging`), prints the warnings and, once the server really
listens, the banner (:func:`banner`: where it listens and every Pusher app's id and key,
never a secret).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import replace
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from channelcast.cli.options import ConfigOption, settings_from

if TYPE_CHECKING:
    from channelcast.config import Settings
    from channelcast.gateway.server import GatewayServer

QUIET_LIBRARIES = ("httpx", "httpcore")
"""Libraries whose INFO lines (one per webhook POST) only show with --log-level debug."""


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(config: ConfigOption = None,
          host: Annotated[str | None, typer.Option(
              metavar="HOST",
              help="Interface to listen on (default: gateway.host, 127.0.0.1).")] = None,
          port: Annotated[int | None, typer.Option(
              metavar="PORT", min=0, max=65535,
              help="Port, 0 for any free one (default: gateway.port, 8000).")] = None,
          demo: Annotated[bool, typer.Option(
              "--demo", help="Serve the demo page, its unsigned publish endpoint and an "
              "allow-all /auth (same as gateway.demo = true). Never in production.")] = False,
          log_level: Annotated[LogLevel, typer.Option(
              metavar="LEVEL", help="Log level: debug, info, warning or error; at warning, "
                                    "the per-connection INFO lines are quiet. The HTTP "
                                    "client's per-request lines (webhooks) show at debug "
                                    "only.")
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
    of gateway nodes share the work. It binds its address first (a port in use is a
    one-line error), then connects to the broker, and prints its address once it
    accepts connections.

    SIGINT/SIGTERM shut it down gracefully (exit code 0): clients are told, flushed and
    closed (or cut) within 5 s of the signal; HTTP requests still running get what is
    left, at least 0.5 s; then the node closes: pending presence and webhook tasks get
    up to 5 s each, and on Kafka unacknowledged publishes are flushed for up to
    kafka.timeout_s (the memory broker has nothing to wait for). A log line gives each
    part's time. During start-up they stop it at once
    (exit code 0); a second Ctrl-C during the shutdown ends it at once (exit code 130).
    The default app secret, and any secret shorter than 16 characters, is refused on any
    address but loopback. Errors: one line, exit code 2.
    """
    from channelcast.gateway.server import STOPPED_DURING_STARTUP, display_address, startup_check
    from channelcast.gateway.server import serve as run
    from channelcast.runtime import freeze_startup_heap

    main_thread = threading.current_thread() is threading.main_thread()
    # Until the server takes the signals over, SIGTERM stops us like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        settings = settings_from(config)
        if demo:
            settings = replace(settings, gateway=replace(settings.gateway, demo=True))
        h = host or settings.gateway.host
        warnings = startup_check(settings, h)  # ConfigError: one line, exit 2
        configure_logging(log_level)
        log = logging.getLogger("channelcast.gateway")
        for warning in warnings:
            log.warning(warning)

        def on_listening(server: GatewayServer) -> None:
            for line in banner(settings, display_address(h, server.port)):
                typer.echo(line)

        freeze_startup_heap()  # shorter garbage-collector pauses (see channelcast.runtime)
        code = run(settings, host=host, port=port, log_level=log_level.value,
                   access_log=access_log, say=lambda line: typer.echo(line, err=True),
                   on_listening=on_listening)
    except KeyboardInterrupt:  # a signal before the server took the signals over
        typer.echo("stopped by a signal while starting; nothing was served", err=True)
        raise typer.Exit(STOPPED_DURING_STARTUP) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if code:
        raise typer.Exit(code)


def configure_logging(level: LogLevel) -> None:
    """The root logger at ``level``; :data:`QUIET_LIBRARIES` at WARNING unless ``debug``."""
    logging.basicConfig(level=level.value.upper(), format="%(levelname)s: %(message)s")
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level is LogLevel.debug else logging.WARNING)


def banner(settings: Settings, address: str) -> list[str]:
    """What ``serve`` prints once it listens on ``address`` (``host:port``): where, the
    broker, and every Pusher app by id and key (secrets never)."""
    g = settings.gateway
    lines = [f"channelcast gateway on http://{address}/  (broker: {settings.broker}; "
             f"app key: {g.app_key}; Ctrl-C to stop)"]
    if not settings.pusher.enabled:
        lines.append("  Pusher protocol: off (pusher.enabled = false)")
        return lines
    apps = [f"app {g.app_id} (key {g.app_key}, the default)"]
    apps += [f"app {a.id} (key {a.key})" for a in settings.apps]
    lines.append(f"  Pusher protocol: ws://{address}/app/{{key}} and "
                 f"http://{address}/apps/{{id}}/...; {len(apps)} "
                 f"app{'s' if len(apps) > 1 else ''}: {', '.join(apps)}")
    return lines


def register(app: typer.Typer) -> None:
    app.command("serve", short_help="Run the realtime gateway (WebSocket, SSE, HTTP API, "
                                    "Pusher protocol; --demo: the demo page).")(serve)
