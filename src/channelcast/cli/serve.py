"""``channelcast serve``: run the gateway (the demo page at http://HOST:PORT/ with --demo)."""

from __future__ import annotations

import logging
from dataclasses import replace
from enum import StrEnum
from typing import Annotated

import typer

from channelcast.cli.options import ConfigOption, settings_from


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
              help="Log level; at warning, the per-connection INFO lines are quiet.")
          ] = LogLevel.info,
          access_log: Annotated[bool, typer.Option(
              "--access-log/--no-access-log", help="One line per HTTP request.")] = False,
          ) -> None:
    """Run the realtime gateway: WebSocket, SSE, HTTP publish API (and the demo page).

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
    logging.basicConfig(level=log_level.value.upper(), format="%(levelname)s: %(message)s")
    typer.echo(f"channelcast gateway on http://{h}:{p}/  (broker: {settings.broker}; "
               f"app key: {settings.gateway.app_key}; Ctrl-C to stop)")
    log = logging.getLogger("channelcast.gateway")
    for warning in warnings:
        log.warning(warning)
    freeze_startup_heap()  # shorter garbage-collector pauses (see channelcast.runtime)
    try:
        run(settings, host=host, port=port, log_level=log_level.value, access_log=access_log)
    except KeyboardInterrupt:  # Ctrl-C before the server took over the signals
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
