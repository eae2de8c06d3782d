"""``channelcast config check`` and ``channelcast route``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from channelcast.channels import validate_channel
from channelcast.cli.options import ConfigOption, settings_from
from channelcast.errors import ConfigError
from channelcast.strategies import create_strategy


def check(config: ConfigOption = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Validate the config and print it resolved (file + environment), or name the bad key.

    With --json an error is JSON too, on stdout: ``{"error": {"key": ..., "problem": ...}}``
    (exit code 2, as for the one-line error)."""
    try:
        settings = settings_from(config)
    except ConfigError as exc:
        if not as_json:
            raise
        typer.echo(json.dumps({"error": {"key": exc.key, "problem": exc.problem}}, indent=2))
        raise typer.Exit(2) from None
    data = settings.to_dict(redact=True)  # a check's output gets pasted into tickets
    if as_json:
        # Not sorted: the order of kafka.topic_mapping is meaningful (first match wins).
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"# resolved from {settings.source} + environment: OK")
    typer.echo(json.dumps(data, indent=2))


def route(channels: Annotated[list[str], typer.Argument(help="Channel names.")],
          config: ConfigOption = None,
          strategy: Annotated[str | None, typer.Option(
              help="Override kafka.topic_strategy (grouped, one-per-channel).")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
          ) -> None:
    """Print the topic, partition and key each channel is published to."""
    settings = settings_from(config)
    kafka = settings.kafka
    if strategy:
        from dataclasses import replace

        from channelcast.config import Settings, validate
        kafka = replace(kafka, topic_strategy=strategy)
        try:
            validate(Settings(broker=settings.broker, kafka=kafka, gateway=settings.gateway))
        except ConfigError as exc:
            if exc.key != "kafka.topic_strategy":
                raise
            raise ConfigError("--strategy", exc.problem) from None
    strat = create_strategy(kafka)
    rows: list[dict[str, str]] = []
    for name in channels:
        r = strat.route(validate_channel(name))
        rows.append({"channel": name, "topic": r.topic, "partition": str(r.partition),
                     "key": r.key.decode()})
    if as_json:
        for row in rows:
            typer.echo(json.dumps(dict(row, partition=int(row["partition"]))))
        return
    table = Table("channel", "topic", "partition", "key", title=f"strategy: {strat.name}")
    for row in rows:
        table.add_row(row["channel"], row["topic"], row["partition"], row["key"])
    Console().print(table)


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Inspect and validate configuration.", no_args_is_help=True)
    config_app.command("check")(check)
    app.add_typer(config_app, name="config")
    app.command("route")(route)
