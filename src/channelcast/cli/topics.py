"""``channelcast topics plan | apply``: provision the config's topics on Kafka."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from channelcast.cli.options import ConfigOption, TimeoutOption, bootstrap_from, settings_from
from channelcast.ops.provision import PARTITION_INCREASE_HELP, TopicPlan, apply_plan, plan_topics

if TYPE_CHECKING:
    from channelcast.brokers.kafka.admin import KafkaAdmin
    from channelcast.config import Settings

BrokersOption = Annotated[str | None, typer.Option(
    "--brokers", "-b", metavar="HOST:PORT",
    help="Kafka bootstrap servers, host:port[,host:port] (default: kafka.brokers from the "
         "config).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DeadLetterOption = Annotated[bool, typer.Option(
    "--dead-letter", help="Also provision kafka.dead_letter_topic (1 partition).")]

def fold_table(*headers: str, title: str | None = None) -> Table:
    """A table whose long names wrap instead of being cut off with an ellipsis."""
    table = Table(title=title)
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


_STYLE = {"create": "green", "change": "yellow", "ok": "dim"}


def admin_for(settings: Settings, brokers: str | None, timeout: float | None) -> KafkaAdmin:
    """The admin client for the command (imports confluent-kafka only when needed)."""
    from channelcast.brokers.kafka.admin import KafkaAdmin

    return KafkaAdmin(bootstrap_from(brokers, "--brokers") or settings.kafka.brokers,
                      timeout_s=timeout or settings.kafka.timeout_s)


def _print_plan(plan: TopicPlan, console: Console) -> None:
    table = fold_table("topic", "action", "partitions", "replication", "configs", "notes",
                  title=f"{plan.bootstrap} ({plan.brokers} broker(s)), strategy {plan.strategy}")
    for row in plan.rows:
        have_p = "-" if row.have_partitions is None else str(row.have_partitions)
        have_rf = "-" if row.have_replication_factor is None else str(row.have_replication_factor)
        parts = (str(row.want_partitions) if row.have_partitions == row.want_partitions
                 else f"{have_p} -> {row.want_partitions}")
        rf = (str(row.want_replication_factor)
              if row.have_replication_factor == row.want_replication_factor
              else f"{have_rf} -> {row.want_replication_factor}")
        configs = ", ".join(f"{k}={v}" for k, v in sorted(row.want_configs.items())) or "-"
        table.add_row(row.topic, f"[{_STYLE[row.action]}]{row.action}[/]", parts, rf, configs,
                      "; ".join(row.notes))
    console.print(table)
    if not plan.rows:
        console.print("The strategy declares no topics (one-per-channel creates them per "
                      "channel); nothing to provision.")
    if plan.needs_force:
        console.print(f"[yellow]warning:[/] {PARTITION_INCREASE_HELP}", soft_wrap=False)


def plan(config: ConfigOption = None, brokers: BrokersOption = None,
         timeout: TimeoutOption = None, as_json: JsonOption = False,
         dead_letter: DeadLetterOption = False) -> None:
    """Dry run: compare the config's topics with the cluster (create / change / ok).

    Only the topics the configured strategy declares are considered; the rest of the
    cluster is ignored. Exits 2 with a one-line error if the plan cannot be applied
    (replication factor above the broker count, fewer partitions than the cluster has).
    """
    settings = settings_from(config)
    result = plan_topics(settings, admin_for(settings, brokers, timeout), dead_letter=dead_letter)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print_plan(result, Console(stderr=False))
    result.check()


def apply(config: ConfigOption = None, brokers: BrokersOption = None,
          timeout: TimeoutOption = None, as_json: JsonOption = False,
          dead_letter: DeadLetterOption = False,
          force: Annotated[bool, typer.Option(
              "--force", help="Allow growing the partitions of existing (keyed) topics. "
              "Drain consumers first: see the warning `plan` prints.")] = False) -> None:
    """Create missing topics and set differing topic configs; running it twice is a no-op.

    Never removes partitions. Growing partitions needs --force because channels move to
    other partitions (per-channel order breaks during the switch).
    """
    settings = settings_from(config)
    admin = admin_for(settings, brokers, timeout)
    the_plan = plan_topics(settings, admin, dead_letter=dead_letter)
    console = Console()
    if not as_json:
        _print_plan(the_plan, console)
    result = apply_plan(the_plan, admin, force=force)
    if as_json:
        typer.echo(json.dumps({"plan": the_plan.to_dict(), "applied": result.to_dict()},
                              indent=2))
        return
    if not result.changed:
        console.print("Nothing to do: the cluster already matches the config.")
        return
    for name in result.created:
        console.print(f"created {name}")
    for name, (old, new) in result.partitions_added.items():
        console.print(f"partitions of {name}: {old} -> {new}")
    for name, changed in result.configs_set.items():
        console.print(f"configs of {name}: " + ", ".join(f"{k}={v}" for k, v in changed.items()))


def register(app: typer.Typer) -> None:
    topics_app = typer.Typer(help="Provision the config's Kafka topics (plan, then apply).",
                             no_args_is_help=True, rich_markup_mode=None)
    topics_app.command("plan", short_help="Dry run: what apply would create or change.")(plan)
    topics_app.command("apply", short_help="Create missing topics, set differing configs "
                                           "(idempotent).")(apply)
    app.add_typer(topics_app, name="topics")
