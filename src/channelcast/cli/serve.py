"""``channelcast serve``: run the gateway (demo page at http://HOST:PORT/)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from channelcast.cli.options import ConfigOption, settings_from


def serve(config: ConfigOption = None,
          host: Annotated[str | None, typer.Option(
              help="Interface to listen on (default: gateway.host, 127.0.0.1).")] = None,
          port: Annotated[int | None, typer.Option(
              help="Port (default: gateway.port, 8000).")] = None,
          ) -> None:
    """Run the realtime gateway: WebSocket, SSE, HTTP publish API and the demo page.

    With no config it uses the embedded memory broker; with a kafka:// broker any number
    of gateway nodes share the work. SIGINT/SIGTERM shut it down gracefully.
    """
    from channelcast.gateway.server import serve as run
    from channelcast.runtime import freeze_startup_heap

    settings = settings_from(config)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    h = host or settings.gateway.host
    p = settings.gateway.port if port is None else port
    typer.echo(f"channelcast gateway on http://{h}:{p}/  (broker: {settings.broker}; "
               "Ctrl-C to stop)")
    freeze_startup_heap()  # shorter garbage-collector pauses (see channelcast.runtime)
    try:
        run(settings, host=host, port=port)
    except KeyboardInterrupt:  # Ctrl-C before the server took over the signals
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
