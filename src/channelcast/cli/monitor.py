"""``channelcast monitor``: partition counts and skew, hot channels, consumer-group lag."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from channelcast.cli.options import ConfigOption, TimeoutOption, settings_from
from channelcast.cli.topics import BrokersOption, admin_for, fold_table
from channelcast.errors import ConfigError
from channelcast.ops.monitor import (
    DEFAULT_SAMPLE,
    DEFAULT_WINDOW_S,
    Snapshot,
    collect,
    resolve_topics,
)
from channelcast.ops.monitor import serve_metrics as ops_serve_metrics


def hot_title(snap: Snapshot) -> str:
    """Which window the hot channels were ranked in, and how much of it was read."""
    w = snap.hot_window

    def clock(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")

    read = (f"all {w.messages} read" if not w.estimated else
            f"{w.read} of {w.messages} read (newest {snap.sample} per partition), "
            "~ counts scaled")
    return (f"hot channels: top {snap.top} by messages in the last {w.seconds:g} s "
            f"({clock(w.from_ms)}-{clock(w.to_ms)} UTC; {read})")


def render(snap: Snapshot) -> Group:
    """The snapshot as Rich tables (partitions, hot channels, lag, warnings)."""
    parts = fold_table("topic", "partition", "low", "high", "messages", "share", "",
                  title="partitions (counts from watermarks)")
    summary = fold_table("topic", "partitions", "messages", "mean", "max/mean", "cv",
                    title="skew per topic")
    for t in snap.topics:
        summary.add_row(t.topic, str(len(t.partitions)), str(t.messages), f"{t.mean:.1f}",
                        f"{t.skew:.2f}", f"{t.cv:.2f}")
        for p in t.partitions:
            flag = "[red]OVERLOADED[/]" if p.overloaded else ""
            parts.add_row(t.topic, str(p.partition), str(p.low), str(p.high), str(p.messages),
                          f"{p.share:.1%}", flag)
    hot = fold_table("channel", "topic", "partition", "messages", "msg/s", "sampled",
                     title=hot_title(snap))
    for h in snap.hot_channels:
        hot.add_row(h.channel, h.topic, str(h.partition),
                    f"~{h.messages}" if h.estimated else str(h.messages), f"{h.rate:.2f}",
                    str(h.sampled))
    items: list[Table | str] = [summary, parts, hot]
    if snap.lag:
        lag = fold_table("group", "topic", "partition", "committed", "high", "lag",
                    title="consumer-group lag")
        for g in snap.lag:
            lag.add_row(g.group, g.topic, str(g.partition),
                        "-" if g.committed is None else str(g.committed), str(g.high),
                        str(g.lag))
        items.append(lag)
    items.extend(f"group {escape(repr(g))}: no committed offsets on these topics (an "
                 "unknown group, or one that never committed), so no lag to show"
                 for g in snap.groups_without_offsets)
    items.extend(f"[yellow]warning:[/] {w.message}" for w in snap.warnings)
    return Group(*items)


def monitor(
    config: ConfigOption = None,
    brokers: BrokersOption = None,
    timeout: TimeoutOption = None,
    topic: Annotated[list[str] | None, typer.Option(
        "--topic", "-t", metavar="TOPIC",
        help="Topic to watch (repeatable). Default: the config's topics.")
    ] = None,
    prefix: Annotated[list[str] | None, typer.Option(
        "--prefix", metavar="PREFIX",
        help="Watch every topic starting with this (repeatable).")] = None,
    group: Annotated[list[str] | None, typer.Option(
        "--group", "-g", metavar="GROUP",
        help="Consumer group to show lag for (repeatable); one without committed offsets "
             "on the watched topics is named as such. Default: every group with offsets "
             "on the watched topics.")] = None,
    no_lag: Annotated[bool, typer.Option("--no-lag", help="Skip consumer-group lag.")] = False,
    top: Annotated[int, typer.Option(min=1, help="How many hot channels to show.")] = 10,
    sample: Annotated[int, typer.Option(
        min=0, help="Newest messages of the window read per partition to see which "
                    "channels wrote them; counts of a partition holding more are scaled "
                    "(0: skip hot channels).")
    ] = DEFAULT_SAMPLE,
    window: Annotated[float, typer.Option(
        "--window", min=0.001, help="Seconds: hot channels are ranked by their messages in "
                                    "this window, ending now.")
    ] = DEFAULT_WINDOW_S,
    threshold: Annotated[float, typer.Option(
        min=1.0, help="Warn when a partition holds more than this many times the mean.")
    ] = 2.0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one snapshot as JSON (schema channelcast.monitor/2).")] = False,
    prometheus: Annotated[bool, typer.Option(
        "--prometheus", help="Print one snapshot in Prometheus text format.")] = False,
    watch: Annotated[bool, typer.Option(
        "--watch", "-w", help="Live table, refreshed every --interval seconds.")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes.")] = 5.0,
    count: Annotated[int | None, typer.Option(
        min=1, help="With --watch: stop after this many refreshes.")] = None,
    serve_metrics: Annotated[int | None, typer.Option(
        "--serve-metrics", min=0, max=65535, metavar="PORT",
        help="Serve /metrics for Prometheus on PORT (one snapshot per scrape) until "
             "Ctrl-C.")] = None,
    metrics_host: Annotated[str, typer.Option(
        metavar="HOST", help="Address for --serve-metrics to listen on.")] = "127.0.0.1",
) -> None:
    """Per-partition message counts and skew, hot channels and consumer-group lag.

    Counts come from the watermarks; skew is max/mean and the coefficient of variation;
    hot channels are ranked by their messages in the last --window seconds (each
    partition's count exact, its channels from the newest --sample); a partition holding
    more than
    --threshold times the mean is flagged. Output: a table (or --watch for a live one),
    --json, --prometheus, or a /metrics endpoint (--serve-metrics PORT).
    """
    if sum((as_json, prometheus, watch, serve_metrics is not None)) > 1:
        raise ConfigError("--json/--prometheus/--watch/--serve-metrics",
                          "pick one output format")
    settings = settings_from(config)
    admin = admin_for(settings, brokers, timeout)
    topics = resolve_topics(admin, settings, topic or (), prefix or ())
    unknown = sorted(set(topic or ()) - set(topics))
    if unknown:
        raise ConfigError("--topic", "no such topic on the cluster: "
                          + ", ".join(repr(t) for t in unknown[:5]))
    if not topics:
        raise ConfigError("--topic/--prefix", "no existing topic matches the prefix"
                          if prefix else "none of the config's topics exists (run "
                          "`channelcast topics apply`?)")
    groups: list[str] | None = [] if no_lag else (list(group) if group else None)

    def snapshot() -> Snapshot:
        return collect(admin, topics, groups=groups, top=top, sample=sample,
                       window_s=window, threshold=threshold)

    if serve_metrics is not None:
        server = ops_serve_metrics(snapshot, serve_metrics, metrics_host)
        typer.echo(f"serving Prometheus metrics on http://{metrics_host}:{server.port}/metrics"
                   " (Ctrl-C stops)", err=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
        return
    if as_json:
        typer.echo(json.dumps(snapshot().to_dict(), indent=2))
        return
    if prometheus:
        typer.echo(snapshot().to_prometheus().decode(), nl=False)
        return
    console = Console()
    if not watch:
        console.print(render(snapshot()))
        return
    done = 0
    with Live(render(snapshot()), console=console, auto_refresh=False) as live:
        done += 1
        try:
            while count is None or done < count:
                time.sleep(interval)
                live.update(render(snapshot()), refresh=True)
                done += 1
        except KeyboardInterrupt:
            pass


def register(app: typer.Typer) -> None:
    app.command("monitor", short_help="Partition counts and skew, hot channels, consumer-group "
                                      "lag (table, JSON, Prometheus).")(monitor)
