"""``channelcast bench``: run the benchmark scenarios and write the report (thin wrapper
over :func:`channelcast.bench.bench`).

The benchmark is a package of its own with its own extra (``channelcast[bench]``). This
module must import it only inside :func:`run`, when the command runs: every other command
and ``--help`` then work without the extra, and without it this command fails with one
line (MissingDependency, exit code 2) that says what to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from channelcast.errors import ConfigError

SCENARIO_NAMES = ("strategies", "overhead", "ceiling", "fanout", "filter", "latency")
"""For the help text only (the package is not imported for it); the same names, in the
same order, as ``channelcast.bench.SCENARIOS`` (a test holds them equal)."""

PEER_SCENARIO_NAMES = ("peers-fanout", "peers-publish", "peers-kafka-browser")
"""Likewise, ``channelcast.bench.PEER_SCENARIOS`` (the ``--peers`` comparison)."""

OUTPUT = Path("bench-results")
"""Default results folder, the same as ``channelcast.bench.DEFAULT_OUTPUT``."""

KAFKA_LIBS_ENV = "CHANNELCAST_KAFKA_LIBS"
"""Where ``--kafka-libs`` is read from when not given (``scripts/bench`` sets it)."""

PEERS_DIR_ENV = "CHANNELCAST_PEERS_DIR"
"""Where ``--peers-dir`` is read from when not given; the same name as
``channelcast.bench.peers.install.PEERS_DIR_ENV`` and ``scripts/bench-peers``."""


def _settings(option: str, pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(option, f"want KEY=VALUE (a librdkafka setting), got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError("--rates", f"want comma-separated numbers, got {text!r}") from None
    if not rates:
        raise ConfigError("--rates", "give at least one rate")
    return rates


def run(
    bootstrap: Annotated[str | None, typer.Option(
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (HOST:PORT). Use a broker of its own: the full run "
             "creates 1,000+ topics (and deletes them).")] = None,
    kafka_libs: Annotated[Path | None, typer.Option(
        "--kafka-libs", metavar="DIR", envvar=KAFKA_LIBS_ENV, show_envvar=True,
        help="Folder of Kafka's jars (a Kafka distribution's libs/) to run its Java "
             "ProducerPerformance, the ceiling scenario; without it that scenario is "
             "reported as not run.")] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Small sizes: every scenario in well under 2 minutes.")] = False,
    channels: Annotated[int | None, typer.Option(help="Channels (default 1000).")] = None,
    messages: Annotated[int | None, typer.Option(
        help="Messages per saturation / overhead run (default 100000).")] = None,
    rates: Annotated[str | None, typer.Option(
        help="Fixed offered loads, msg/s, comma-separated (default 1000,10000).")] = None,
    rate_seconds: Annotated[float | None, typer.Option(
        help="Seconds per fixed-rate run (default 10).")] = None,
    size: Annotated[int | None, typer.Option(
        help="Encoded message size in bytes (default 256).")] = None,
    clients: Annotated[int | None, typer.Option(
        help="WebSocket clients in the fan-out scenario (default 1000).")] = None,
    scenarios: Annotated[str | None, typer.Option(
        help=f"Comma-separated subset of: {', '.join(SCENARIO_NAMES)} (with --peers: of "
             f"{', '.join(PEER_SCENARIO_NAMES)}).")] = None,
    peers: Annotated[bool, typer.Option(
        "--peers", help="Instead of the scenarios above, channelcast side by side with "
                        "Centrifugo, sockudo, a plain websockets loop, FastStream and "
                        "broadcaster (installed by scripts/bench-peers); a peer that is "
                        "missing is reported as not run.")] = False,
    peers_dir: Annotated[Path | None, typer.Option(
        "--peers-dir", metavar="DIR", envvar=PEERS_DIR_ENV, show_envvar=True,
        help="The folder scripts/bench-peers built the peers into (default "
             "${XDG_CACHE_HOME:-~/.cache}/channelcast/peers).")] = None,
    repeat: Annotated[int | None, typer.Option(
        help="Run the strategies scenario (with --peers: every peers scenario) N times on "
             "fresh topics; its targets are judged on the median (default 1).")] = None,
    rounds: Annotated[int | None, typer.Option(
        help="Alternating rounds of the overhead scenario's publish loops; the median is "
             "reported (default 3, 1 with --quick).")] = None,
    producer: Annotated[list[str] | None, typer.Option(
        "--producer", metavar="KEY=VALUE",
        help="A librdkafka producer setting for channelcast's publisher and the raw "
             "baselines alike (repeatable), e.g. --producer linger.ms=1.")] = None,
    consumer: Annotated[list[str] | None, typer.Option(
        "--consumer", metavar="KEY=VALUE",
        help="A librdkafka consumer setting, likewise (repeatable).")] = None,
    warm_up: Annotated[float | None, typer.Option(
        "--warm-up", metavar="SECONDS",
        help="Untimed raw load on a throwaway topic before the scenarios, so a broker JVM "
             "started a moment ago has compiled its hot paths (default 0; scripts/bench "
             "gives the broker it starts 15).")] = None,
    out: Annotated[Path, typer.Option(help="Results folder (a sub-folder per run).")
                   ] = OUTPUT,
) -> None:
    """Measure strategies, overhead against raw confluent-kafka, the Java ceiling and
    gateway fan-out, in one process against one broker; write report.md, results.json and
    bench.png. Without --bootstrap it runs on the memory broker (the Kafka-only scenarios
    are then skipped). For a full run on a private one-node Kafka, run scripts/bench
    with these options from a channelcast checkout: it starts one, runs this command with
    --bootstrap and --kafka-libs (and --warm-up 15 unless --quick), then stops it. Needs
    channelcast's optional bench dependencies (its bench extra).

    With --peers: the peers comparison instead (fan-out, publish, Kafka to browser against
    Centrifugo, sockudo, plain websockets, FastStream, broadcaster), written to a folder
    of its own; install the peers with scripts/bench-peers (the peers extra and the
    builds), run it with scripts/bench --peers --repeat 3."""
    # Here, not at the top: see the module docstring (MissingDependency without the extra).
    from channelcast.bench import BenchConfig, bench

    overrides: dict[str, Any] = {}
    for key, value in (("channels", channels), ("messages", messages),
                       ("rate_seconds", rate_seconds), ("message_bytes", size),
                       ("fanout_clients", clients), ("repeat", repeat),
                       ("overhead_rounds", rounds), ("warm_up_s", warm_up)):
        if value is not None:
            overrides[key] = value
    if producer:
        overrides["producer"] = _settings("--producer", producer)
    if consumer:
        overrides["consumer"] = _settings("--consumer", consumer)
    if rates is not None:
        overrides["rates"] = _rates(rates)
    if scenarios is not None:
        overrides["scenarios"] = tuple(s.strip() for s in scenarios.split(",") if s.strip())
        names = PEER_SCENARIO_NAMES if peers else SCENARIO_NAMES
        # Known names of the other mode; unknown names are BenchConfig's to refuse.
        other = [s for s in overrides["scenarios"]
                 if s in (SCENARIO_NAMES if peers else PEER_SCENARIO_NAMES)]
        if other:
            raise ConfigError("--scenarios", f"{', '.join(other)}: not a scenario of "
                              f"{'--peers' if peers else 'this run (peers-* need --peers)'};"
                              f" choose from {', '.join(names)}")
    elif peers:
        overrides["scenarios"] = PEER_SCENARIO_NAMES
    config = BenchConfig.quick(**overrides) if quick else BenchConfig(**overrides)

    def log(message: str) -> None:
        typer.echo(message, err=True)

    if peers:
        _run_peers(config, bootstrap, peers_dir, out, log)
        return

    # As `channelcast serve` does: the start-up heap out of the collector's full
    # collections, whose pauses every in-flight message (raw or channelcast) would pay.
    from channelcast.runtime import freeze_startup_heap

    freeze_startup_heap()
    results, paths = bench(config, bootstrap=bootstrap, kafka_libs=kafka_libs, output=out,
                           log=log)
    typer.echo(paths["report"].read_text(encoding="utf-8"))
    typer.echo(f"written: {paths['report']}, {paths['json']}, {paths['plot']}")
    if results.errors:
        raise typer.Exit(1)


def _run_peers(config: Any, bootstrap: str | None, peers_dir: Path | None, out: Path,
               log: Any) -> None:
    from channelcast.bench.peers.install import default_peers_dir
    from channelcast.bench.peers.runner import peers_bench
    from channelcast.runtime import freeze_startup_heap

    freeze_startup_heap()
    results, paths = peers_bench(config, peers_dir=peers_dir or default_peers_dir(),
                                 bootstrap=bootstrap, output=out, log=log)
    typer.echo(paths["report"].read_text(encoding="utf-8"))
    typer.echo(f"written: {paths['report']}, {paths['json']}, {paths['plot']}")
    if results.errors:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("bench", short_help="Benchmark strategies, overheads, the Java ceiling and "
                                    "gateway fan-out, or (--peers) channelcast against its "
                                    "peers; write a report.")(run)
