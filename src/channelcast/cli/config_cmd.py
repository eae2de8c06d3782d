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

Bootstrap = Annotated[str | None, typer.Option(
    "--bootstrap", "-b", help="Also ask this Kafka cluster (HOST:PORT) how its topics "
    "really look, and compare.")]


def check(config: ConfigOption = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
          bootstrap: Bootstrap = None) -> None:
    """Validate the config and print it resolved (file + environment), or name the bad key.

    With --json an error is JSON too, on stdout: ``{"error": {"key": ..., "problem": ...}}``
    (exit code 2, as for the one-line error). With --bootstrap, also compare every declared
    topic's partition count with the cluster's: a disagreement is printed and the exit code
    is 1 (channelcast, like every Kafka client, routes by the real count, so the config's
    routes would be wrong).
    """
    try:
        settings = settings_from(config)
    except ConfigError as exc:
        if not as_json:
            raise
        typer.echo(json.dumps({"error": {"key": exc.key, "problem": exc.problem}}, indent=2))
        raise typer.Exit(2) from None
    data = settings.to_dict(redact=True)  # a check's output gets pasted into tickets
    problems: list[str] = []
    if bootstrap:
        from channelcast.brokers.kafka.admin import KafkaAdmin
        from channelcast.ops.layout import layout_disagreements

        admin = KafkaAdmin(bootstrap, timeout_s=settings.kafka.timeout_s)
        problems = [str(d) for d in layout_disagreements(settings.kafka, admin)]
    if as_json:
        # Not sorted: the order of kafka.topic_mapping is meaningful (first match wins).
        if bootstrap:
            data = {"config": data, "cluster": bootstrap, "disagreements": problems}
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(f"# resolved from {settings.source} + environment: OK")
        typer.echo(json.dumps(data, indent=2))
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        if bootstrap and not problems:
            typer.echo(f"# every declared topic on {bootstrap} has the configured "
                       "partition count")
    if problems:
        raise typer.Exit(1)


def route(channels: Annotated[list[str], typer.Argument(help="Channel names.")],
          config: ConfigOption = None,
          strategy: Annotated[str | None, typer.Option(
              help="Override kafka.topic_strategy (grouped, one-per-channel).")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
          bootstrap: Bootstrap = None,
          ) -> None:
    """Print the topic, partition and key each channel is published to.

    With --bootstrap the partition is computed from the topic's real partition count on
    that cluster (what channelcast and every Kafka client use); a difference from the
    config's is marked.
    """
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
    if bootstrap:
        from channelcast.brokers.kafka.admin import KafkaAdmin
        from channelcast.ops.layout import real_routes

        admin = KafkaAdmin(bootstrap, timeout_s=kafka.timeout_s)
        for rr in real_routes(kafka, channels, admin):
            note = "" if rr.partitions is not None else " (no such topic)"
            if rr.partition != rr.configured_partition:
                note = f" (config says {rr.configured_partition}; topic has {rr.partitions})"
            rows.append({"channel": rr.channel, "topic": rr.topic,
                         "partition": str(rr.partition), "key": rr.key, "note": note})
    for name in channels if not bootstrap else ():
        r = strat.route(validate_channel(name))
        rows.append({"channel": name, "topic": r.topic, "partition": str(r.partition),
                     "key": r.key.decode(), "note": ""})
    if as_json:
        for row in rows:
            out: dict[str, object] = dict(row, partition=int(row["partition"]))
            if not row["note"]:
                del out["note"]
            typer.echo(json.dumps(out))
        return
    title = f"strategy: {strat.name}" + (f", partitions as on {bootstrap}" if bootstrap else "")
    table = Table("channel", "topic", "partition", "key", title=title)
    for row in rows:
        table.add_row(row["channel"], row["topic"], row["partition"] + row["note"], row["key"])
    Console().print(table)


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Inspect and validate configuration.", no_args_is_help=True)
    config_app.command("check")(check)
    app.add_typer(config_app, name="config")
    app.command("route")(route)
