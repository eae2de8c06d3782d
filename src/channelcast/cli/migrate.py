"""``channelcast migrate``: copy legacy one-per-channel topics onto the grouped topics."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from channelcast.cli.options import ConfigOption, TimeoutOption, settings_from
from channelcast.cli.topics import BrokersOption, JsonOption, admin_for, fold_table
from channelcast.ops import migrate as ops

DEFAULT_CHECKPOINT = Path("channelcast-migrate.checkpoint.json")


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM finish the current batch, checkpoint, then stop (no lost work)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_plan(plan: ops.MigrationPlan, console: Console) -> None:
    table = fold_table("legacy topic", "partitions", "messages", "remaining", "channel",
                  "target", "partition",
                  title=f"migration plan ({'resuming' if plan.resumed else 'new'}): "
                        f"{len(plan.sources)} legacy topics, {plan.messages} messages, "
                        f"{plan.remaining} to copy")
    for s in plan.sources:
        table.add_row(s.topic, str(s.partitions), str(s.messages), str(s.remaining),
                      s.channel or "-", s.target or "-",
                      "-" if s.target_partition is None else str(s.target_partition))
    console.print(table)


def _print_verify(result: ops.VerifyReport, console: Console) -> None:
    data = result.to_dict()
    status = "[green]passed[/]" if result.ok else "[red]FAILED[/]"
    console.print(f"verification {status}: {data['channels']} channels, "
                  f"{data['source_messages']} legacy messages, "
                  f"{data['target_messages']} found in the target")
    if result.failures:
        table = fold_table("channel", "legacy", "target", "duplicates", "missing", "in order")
        for c in result.failures[:50]:
            table.add_row(c.channel, str(c.source), str(c.target), str(c.duplicates),
                          str(c.missing), "yes" if c.in_order else "NO")
        console.print(table)


def migrate(
    config: ConfigOption = None,
    brokers: BrokersOption = None,
    timeout: TimeoutOption = None,
    prefix: Annotated[str | None, typer.Option(
        metavar="PREFIX", help="Legacy topics are those whose name starts with this "
             "(default: kafka.topic_prefix + '_', the one-per-channel naming).")] = None,
    pattern: Annotated[str | None, typer.Option(
        metavar="REGEX", help="Legacy topics are those whose whole name matches this regex "
             "(instead of --prefix).")] = None,
    checkpoint: Annotated[Path, typer.Option(
        metavar="FILE",
        help="Checkpoint file: progress is saved here after every acknowledged batch and "
             "a rerun resumes from it.")] = DEFAULT_CHECKPOINT,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show the legacy topics, counts and routes (by the target "
                          "topics' real partition counts); copy nothing. Fails as the real "
                          "run would when a target topic is missing or has another "
                          "partition count than the config.")] = False,
    follow: Annotated[bool, typer.Option(
        "--follow", help="After catching up keep copying new legacy messages (and new "
                         "legacy topics) until Ctrl-C / SIGTERM; for the cut-over.")] = False,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Compare per-channel counts, ids and order, legacy "
                                     "against target, at the end.")] = True,
    verify_only: Annotated[bool, typer.Option(
        "--verify-only", help="Only run the verification.")] = False,
    batch_size: Annotated[int, typer.Option(
        min=1, help="Messages per acknowledged, checkpointed batch.")] = 500,
    max_rate: Annotated[float | None, typer.Option(
        min=1.0, help="Copy at most this many messages per second.")] = None,
    limit: Annotated[int | None, typer.Option(
        min=1, help="Stop after about this many copies (a trial run; rerun to resume).")] = None,
    skip_malformed: Annotated[bool, typer.Option(
        "--skip-malformed", help="Count and skip legacy messages that are not channelcast "
                                 "envelopes (default: stop at the first, named).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Move data off legacy one-topic-per-channel topics onto the grouped topics.

    Every record is read as the gateway and the workers read it (the original's own
    records included: second timestamps become milliseconds), then re-published keyed by
    its channel to the topic and partition the configured grouped mapping gives it,
    keeping its id and per-channel order. Progress is checkpointed (--checkpoint) so a
    killed run resumes without gaps or duplicates. Create the target topics first with
    channelcast topics apply.
    """
    settings = settings_from(config)
    selection = (ops.Selection(prefix=prefix, pattern=pattern) if prefix or pattern
                 else ops.Selection.legacy(settings))
    admin = admin_for(settings, brokers, timeout)
    console = Console()
    out: dict[str, Any] = {}

    if dry_run:
        plan = ops.plan_migration(settings, admin, selection, checkpoint)
        if as_json:
            typer.echo(json.dumps({"plan": plan.to_dict()}, indent=2))
        else:
            _print_plan(plan, console)
        if plan.problem is not None:  # what the real run would refuse with (exit 2)
            raise plan.problem
        return

    if not verify_only:
        stop = threading.Event()
        with _stop_on_signals(stop):
            if as_json:
                report = ops.migrate(settings, admin, selection, checkpoint, follow=follow,
                                     stop=stop, batch_size=batch_size, max_rate=max_rate,
                                     limit=limit, skip_malformed=skip_malformed)
            else:
                columns = (TextColumn("[bold]{task.description}"), BarColumn(),
                           MofNCompleteColumn(), TextColumn("{task.fields[channels]}"),
                           TextColumn("{task.fields[skipped]}"), TimeElapsedColumn())
                # Drawn from the first progress report on: a run refused before it
                # starts (a checkpoint of another selection, a lock) shows no bar.
                bar = Progress(*columns, console=console, transient=False)
                task = bar.add_task("messages", total=None, channels="", skipped="")

                def show(p: ops.Progress) -> None:
                    if not bar.live.is_started:
                        bar.start()
                    done = p.copied + p.skipped_duplicates
                    bar.update(task, completed=done, total=max(p.total, done),
                               channels=f"channels {p.channels}/{p.channels_total}",
                               skipped=f"{p.skipped_duplicates} already copied")

                try:
                    report = ops.migrate(settings, admin, selection, checkpoint,
                                         follow=follow, stop=stop, batch_size=batch_size,
                                         max_rate=max_rate, limit=limit,
                                         skip_malformed=skip_malformed, on_progress=show)
                finally:
                    if bar.live.is_started:
                        bar.stop()
        out["migration"] = report.to_dict()
        if not as_json:
            console.print(
                f"copied {report.copied} messages of {len(report.per_channel)} channels in "
                f"{report.seconds:.1f}s; skipped {report.skipped_duplicates} already in the "
                f"target, {report.skipped_malformed} malformed"
                + ("" if report.finished or follow else " (stopped early; rerun to resume)"))
            for pos in report.malformed_positions[:20]:
                console.print(f"  malformed: {pos}")
        if not (report.finished or follow or stop.is_set()):
            verify = False  # a partial copy cannot pass verification yet
        if stop.is_set() and not follow:
            verify = False

    failed = False
    if verify or verify_only:
        result = ops.verify_migration(settings, admin, selection, checkpoint)
        out["verify"] = result.to_dict()
        failed = not result.ok
        if not as_json:
            _print_verify(result, console)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("migrate", short_help="Copy legacy one-topic-per-channel topics onto the "
                                      "grouped topics (checkpointed, verified).")(migrate)
