"""The peers comparison's files: ``report.md`` (a table per scenario with each peer's
version, settings, what it negotiated, the median and spread of the runs; the targets with
met/missed), ``results.json`` and ``peers.png`` (bars with the runs' spread).

Pure formatting over :class:`~channelcast.bench.peers.model.PeersResults`; the only I/O
is writing the three files into the folder it is given. The targets are measured, never
asserted.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable
from pathlib import Path

from channelcast.bench.model import to_jsonable
from channelcast.bench.peers.model import (
    CLIENT_CPU_US_PER_DELIVERY,
    CPU_US_PER_DELIVERY,
    CPU_US_PER_MSG,
    DELIVERED,
    DELIVERIES_PER_S,
    FANOUT,
    FRAMES_PER_DELIVERY,
    KAFKA_BROWSER,
    MAX_MS,
    MSG_PER_S,
    P50_MS,
    P99_MS,
    P999_MS,
    PUBLISH,
    PeerResult,
    PeersResults,
)
from channelcast.bench.peers.publish import FASTSTREAM
from channelcast.bench.report import TargetCheck


def _num(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def _ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _fmt(figure: str) -> Callable[[float], str]:
    if figure.endswith("ms"):
        return _ms
    if figure == FRAMES_PER_DELIVERY:
        return lambda v: _num(v, 2)
    if "µs" in figure or figure == DELIVERED:
        return lambda v: _num(v, 1)
    return _num


def cell(result: PeerResult, figure: str) -> str:
    """``median (min-max)`` of a figure over the runs; just the value with one run."""
    fmt = _fmt(figure)
    values = result.values(figure)
    if not values:
        return "n/a"
    if len(values) == 1:
        return fmt(values[0])
    low, high = result.spread(figure)
    return f"{fmt(result.median(figure))} ({fmt(low)}–{fmt(high)})"


# --- targets ------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if not (math.isnan(a) or math.isnan(b) or b == 0) else math.nan


def _best(results: list[PeerResult], figure: str, higher: bool,
          names: tuple[str, ...] | None = None) -> PeerResult | None:
    peers = [r for r in results if not r.channelcast and r.ran
             and (names is None or r.name in names)
             and not math.isnan(r.median(figure))]
    if not peers:
        return None
    return (max if higher else min)(peers, key=lambda r: r.median(figure))


def _check(name: str, mine: PeerResult | None, best: PeerResult | None, figure: str,
           limit: float, higher: bool) -> TargetCheck:
    if mine is None or best is None or math.isnan(mine.median(figure)):
        why = ("channelcast did not run" if mine is None or not mine.ran
               else "no peer ran" if best is None else "no figure")
        return TargetCheck(name, f"n/a ({why})", None)
    fmt = _fmt(figure)
    ratio = _ratio(mine.median(figure), best.median(figure))
    measured = (f"{ratio:.2f}x ({mine.name} {fmt(mine.median(figure))} against "
                f"{best.name} {fmt(best.median(figure))}, medians of "
                f"{len(mine.values(figure))} and {len(best.values(figure))} runs)")
    met = None if math.isnan(ratio) else (ratio >= limit if higher else ratio <= limit)
    return TargetCheck(name, measured, met)


def _mine(results: list[PeerResult]) -> PeerResult | None:
    return next((r for r in results if r.channelcast), None)


def check_peer_targets(results: PeersResults) -> list[TargetCheck]:
    """The planner's targets, judged on medians: fan-out deliveries/s >= 0.7x the best
    peer's and server CPU per delivery <= 1.5x the best peer's; publish_many >= 2x
    FastStream's faster batch path; Kafka-to-browser p99 <= the best peer's."""
    out: list[TargetCheck] = []
    fan = results.scenario(FANOUT)
    if fan:
        out.append(_check("fan-out deliveries/s >= 0.7x the best peer's", _mine(fan),
                          _best(fan, DELIVERIES_PER_S, True), DELIVERIES_PER_S, 0.7, True))
        out.append(_check("fan-out server CPU per delivery <= 1.5x the best peer's",
                          _mine(fan), _best(fan, CPU_US_PER_DELIVERY, False),
                          CPU_US_PER_DELIVERY, 1.5, False))
    pub = results.scenario(PUBLISH)
    if pub:
        out.append(_check("publish_many() msg/s >= 2x FastStream's (its faster batch path)",
                          _mine(pub), _best(pub, MSG_PER_S, True, FASTSTREAM), MSG_PER_S,
                          2.0, True))
    k2b = results.scenario(KAFKA_BROWSER)
    if k2b:
        out.append(_check("Kafka-to-browser p99 <= the best peer's", _mine(k2b),
                          _best(k2b, P99_MS, False), P99_MS, 1.0, False))
    return out


# --- markdown ---------------------------------------------------------------------------


def _table(results: list[PeerResult], figures: list[str], negotiated: bool) -> list[str]:
    head = ["contender", "version", *(["negotiated (Chromium's offer)"] if negotiated else []),
            "runs", *figures, "settings"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i < 3 + negotiated else "---:"
                            for i in range(len(head) - 1)) + "|---|"]
    for r in results:
        if r.not_run:
            cells = [r.name, r.version or "—", *(["—"] if negotiated else []),
                     f"not run: {r.not_run}", *(["—"] * len(figures)), "—"]
        else:
            runs = f"{len(r.runs)}" + (f" ({len(r.errors)} failed)" if r.errors else "")
            cells = [f"**{r.name}**" if r.channelcast else r.name, r.version,
                     *([r.negotiated or "n/a"] if negotiated else []), runs,
                     *(cell(r, f) for f in figures), r.settings]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def _runs(results: list[PeerResult], figures: list[str]) -> list[str]:
    lines: list[str] = []
    for r in results:
        for i, run in enumerate(r.runs, start=1):
            shown = ", ".join(f"{f} {_fmt(f)(run.figures.get(f, math.nan))}" for f in figures)
            lines.append(f"- {r.name}, run {i}: {shown}; {run.note} (load {run.load_average})")
        lines += [f"- {r.name}: **failed** {e}" for e in r.errors]
    return lines


SECTIONS = (
    (FANOUT, "Fan-out: one channel to WebSocket clients",
     [DELIVERIES_PER_S, CPU_US_PER_DELIVERY, P50_MS, P99_MS, DELIVERED,
      FRAMES_PER_DELIVERY, CLIENT_CPU_US_PER_DELIVERY], True),
    (PUBLISH, "Publish to Kafka from Python", [MSG_PER_S, CPU_US_PER_MSG], False),
    (KAFKA_BROWSER, "Kafka to browser", [P50_MS, P99_MS, P999_MS, MAX_MS, DELIVERED], True),
)


def render_markdown(results: PeersResults) -> str:
    c = results.config
    lines = [f"# channelcast bench --peers: run {c.run_id}", "",
             f"Started {results.started}, {results.seconds:.0f} s; broker {results.broker}; "
             f"peers from {results.peers_dir}; {c.repeat} run(s) of each scenario "
             "(tables: median, with min–max over the runs).", "", "| machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in results.machine.items()]
    lines.append("")
    for scenario, title, figures, negotiated in SECTIONS:
        rows = results.scenario(scenario)
        if not rows:
            continue
        lines += [f"## {title} (`{scenario}`)", ""]
        if scenario == FANOUT:
            lines += [f"{c.fanout_clients:,} clients in one process; {c.fanout_messages} "
                      f"messages at {c.fanout_rate:g} msg/s (latency), then a burst of "
                      f"{c.fanout_burst} (deliveries/s and the server process's CPU per "
                      f"delivery); {c.message_bytes} B payloads.", ""]
        elif scenario == PUBLISH:
            lines += [f"{c.messages:,} messages of one envelope's size per run, "
                      f"{c.overhead_partitions} partitions, {c.overhead_channels} channels; "
                      "process CPU counts every thread (librdkafka's too).", ""]
        else:
            lines += [f"{c.browser_clients:,} clients; {c.browser_rate:g} records/s for "
                      f"{c.rate_seconds:g} s from a raw producer; latency from each record's "
                      "intended produce time to each client.", ""]
        lines += _table(rows, figures, negotiated)
        lines += ["", "Runs:", "", *_runs(rows, figures), ""]
    lines += ["## Targets (medians; measured, not asserted)", "",
              "| target | measured | met |", "|---|---|---|"]
    for t in check_peer_targets(results):
        met = "not measured" if t.met is None else "yes" if t.met else "**no**"
        lines.append(f"| {t.name} | {t.measured} | {met} |")
    lines.append("")
    if results.skipped:
        lines += ["## Not run", "", *[f"- {s}" for s in results.skipped], ""]
    if results.errors:
        lines += ["## Errors", "", *[f"- {e}" for e in results.errors], ""]
    return "\n".join(lines)


# --- plot ----------------------------------------------------------------------------------


def render_plot(results: PeersResults, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(FANOUT, DELIVERIES_PER_S, "fan-out deliveries per second"),
              (FANOUT, CPU_US_PER_DELIVERY, "fan-out server CPU µs per delivery"),
              (PUBLISH, MSG_PER_S, "publish msg/s"),
              (KAFKA_BROWSER, P99_MS, "Kafka to browser p99 ms")]
    fig, axes = plt.subplots(1, len(panels), figsize=(22, 6))
    for ax, (scenario, figure, title) in zip(axes, panels, strict=True):
        rows = [r for r in results.scenario(scenario) if r.ran]
        if not rows:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=9)
            continue
        values = [r.median(figure) for r in rows]
        lows = [v - r.spread(figure)[0] for r, v in zip(rows, values, strict=True)]
        highs = [r.spread(figure)[1] - v for r, v in zip(rows, values, strict=True)]
        colors = ["tab:blue" if r.channelcast else "tab:gray" for r in rows]
        ax.bar(range(len(rows)), [0 if math.isnan(v) else v for v in values], color=colors,
               yerr=[[0 if math.isnan(x) else x for x in lows],
                     [0 if math.isnan(x) else x for x in highs]], capsize=4)
        ax.set_xticks(range(len(rows)), [textwrap.fill(r.name, 18) for r in rows],
                      fontsize=7)
        for i, v in enumerate(values):
            if not math.isnan(v):
                ax.text(i, v, f"{v:,.1f}" if v < 100 else f"{v:,.0f}", ha="center",
                        va="bottom", fontsize=8)
        missing = [r.name for r in results.scenario(scenario) if not r.ran]
        ax.set_title(title + (f"\n(not run: {', '.join(missing)})" if missing else ""),
                     fontsize=9)
    fig.suptitle(f"channelcast against its peers, run {results.config.run_id}: medians of "
                 f"{results.config.repeat} run(s), bars = min–max")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_peer_outputs(results: PeersResults, folder: Path) -> dict[str, Path]:
    """Write report.md, results.json and peers.png into ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"report": folder / "report.md", "json": folder / "results.json",
             "plot": folder / "peers.png"}
    paths["report"].write_text(render_markdown(results), encoding="utf-8")
    data = to_jsonable(results)
    data["targets"] = [to_jsonable(t) for t in check_peer_targets(results)]
    paths["json"].write_text(json.dumps(data, indent=2), encoding="utf-8")
    render_plot(results, paths["plot"])
    return paths
