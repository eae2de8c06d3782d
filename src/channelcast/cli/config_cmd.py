"""``channelcast config check`` and ``channelcast route``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from channelcast.channels import validate_channel
from channelcast.cli.options import (
    ConfigOption,
    PlainUsage,
    TimeoutOption,
    bootstrap_from,
    settings_from,
)
from channelcast.errors import ConfigError
from channelcast.strategies import create_strategy

if TYPE_CHECKING:
    from channelcast.brokers.kafka.admin import KafkaAdmin
    from channelcast.config import Settings

Bootstrap = Annotated[str | None, typer.Option(
    "--bootstrap", "-b", metavar="HOST:PORT",
    help="Also ask this Kafka cluster (host:port[,host:port]; a kafka:// prefix is fine) "
         "how its topics really look, and compare.")]


def _admin(bootstrap: str, settings: Settings, timeout: float | None) -> KafkaAdmin:
    from channelcast.brokers.kafka.admin import KafkaAdmin

    return KafkaAdmin(bootstrap, timeout_s=timeout or settings.kafka.timeout_s)


def check(config: ConfigOption = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
          bootstrap: Bootstrap = None,
          timeout: TimeoutOption = None) -> None:
    """Validate the config and print it resolved (file + environment), or name the bad key.

    The librdkafka settings (kafka.producer, kafka.consumer) are checked too, by building
    the clients without waiting on any cluster: a property librdkafka does not know is
    refused here, not when the gateway starts.

    With --json an error is JSON too, on stdout: {"error": {"key": ..., "problem": ...}}
    (exit code 2, as for the one-line error).

    With --bootstrap, also compare every declared topic's partition count with the
    cluster's. A disagreement is an error (exit code 1): channelcast, like every Kafka
    client, routes by the real count, so the config's routes would be wrong. A declared
    topic that does not exist is listed, not an error: channelcast creates it on first
    use (or run channelcast topics apply).
    """
    try:
        addr = bootstrap_from(bootstrap, "--bootstrap")
        settings = settings_from(config)
        if settings.kafka.producer or settings.kafka.consumer:
            from channelcast.brokers.kafka.settings_check import check_client_settings

            check_client_settings(settings.kafka)
    except ConfigError as exc:
        if not as_json:
            raise
        typer.echo(json.dumps({"error": {"key": exc.key, "problem": exc.problem}}, indent=2))
        raise typer.Exit(2) from None
    data = settings.to_dict(redact=True)  # a check's output gets pasted into tickets
    if addr is None:
        if as_json:
            # Not sorted: the order of kafka.topic_mapping is meaningful (first match wins).
            typer.echo(json.dumps(data, indent=2))
        else:
            typer.echo(f"# resolved from {settings.source} + environment: OK")
            typer.echo(json.dumps(data, indent=2))
        return

    from channelcast.ops.layout import layout_report

    report = layout_report(settings.kafka, _admin(addr, settings, timeout))
    problems = [str(d) for d in report.disagreements]
    if as_json:
        typer.echo(json.dumps({
            "config": data, "cluster": addr, "disagreements": problems,
            "missing": [{"topic": m.topic, "partitions": m.declared, "where": m.where,
                         "note": str(m)} for m in report.missing]}, indent=2))
    else:
        typer.echo(f"# resolved from {settings.source} + environment; compared with the "
                   f"topics on {addr} below")
        typer.echo(json.dumps(data, indent=2))
        for topic in report.matching:
            typer.echo(f"# topic {topic!r}: has the configured partition count")
        for missing in report.missing:
            typer.echo(f"# note: {missing}")
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        if not problems:
            typer.echo(f"# OK: no declared topic on {addr} has another partition count "
                       "than the config")
    if problems:
        raise typer.Exit(1)


def route(channels: Annotated[list[str], typer.Argument(
              metavar="CHANNEL", show_default=False, hidden=True,  # described below
              help="Channel names (one or more).")],
          config: ConfigOption = None,
          strategy: Annotated[str | None, typer.Option(
              metavar="NAME",
              help="Override kafka.topic_strategy (grouped, one-per-channel).")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
          bootstrap: Bootstrap = None,
          timeout: TimeoutOption = None,
          ) -> None:
    """Print the topic, partition and key each CHANNEL is published to (one or more
    channel names).

    With --bootstrap the partition is computed from the topic's real partition count on
    that cluster (what channelcast and every Kafka client use); a difference from the
    config's is marked (the note "config says partition 0 (of 10); the topic has 5
    partitions"), as is a topic that does not exist yet.
    """
    addr = bootstrap_from(bootstrap, "--bootstrap")
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
    if addr:
        from channelcast.ops.layout import real_routes

        for rr in real_routes(kafka, channels, _admin(addr, settings, timeout)):
            note = rr.note
            rows.append({"channel": rr.channel, "topic": rr.topic,
                         "partition": str(rr.partition), "key": rr.key, "note": note})
    for name in channels if not addr else ():
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
    title = f"strategy: {strat.name}" + (f", partitions as on {addr}" if addr else "")
    table = Table("channel", "topic", "partition", "key", title=title)
    for row in rows:
        note = f" ({row['note']})" if row["note"] else ""
        table.add_row(row["channel"], row["topic"], row["partition"] + note, row["key"])
    Console().print(table)


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Inspect and validate configuration.", no_args_is_help=True,
                             rich_markup_mode=None)
    config_app.command("check", short_help="Validate the config and print it resolved, or "
                                           "name the bad key.")(check)
    app.add_typer(config_app, name="config")
    app.command("route", cls=PlainUsage,
                short_help="Print the topic, partition and key of each channel.")(route)
