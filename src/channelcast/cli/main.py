"""Entry point: assembles the command groups; ``main(argv)`` returns an exit code.

Every command module exposes ``register(app)``. A ChannelcastError anywhere becomes a
one-line ``error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import click
import typer

from channelcast.errors import ChannelcastError

COMMAND_MODULES = [
    "channelcast.cli.config_cmd",
    "channelcast.cli.topics",
    "channelcast.cli.migrate",
    "channelcast.cli.serve",
]

app = typer.Typer(
    name="channelcast",
    help="Realtime broadcasting over Apache Kafka (or the embedded memory broker).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: Sequence[str] | None = None) -> int:
    command = typer.main.get_command(app)
    try:
        command.main(args=list(argv) if argv is not None else None, prog_name="channelcast",
                     standalone_mode=False)
    except ChannelcastError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


def run() -> None:
    sys.exit(main())
