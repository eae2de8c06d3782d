"""Entry point: assembles the command groups; ``main(argv)`` returns an exit code.

Every command module exposes ``register(app)``. A ChannelcastError anywhere becomes a
one-line ``error: ...`` on stderr and exit code 2, never a traceback. ``--version`` / ``-V``
prints the installed package's version (its metadata, never a second copy in the code).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import click
import typer

from channelcast.errors import ChannelcastError

COMMAND_MODULES = [
    "channelcast.cli.config_cmd",
    "channelcast.cli.topics",
    "channelcast.cli.migrate",
    "channelcast.cli.monitor",
    "channelcast.cli.serve",
    "channelcast.cli.bench",
]

app = typer.Typer(
    name="channelcast",
    help="Realtime broadcasting over Apache Kafka (or the embedded memory broker).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)



def package_version() -> str:
    """channelcast's version from the installed distribution's metadata (PEP 440 text,
    e.g. ``"0.1.0"``); ``"unknown"`` when the package runs without being installed."""
    try:
        return importlib.metadata.version("channelcast")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"channelcast {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", "-V", is_eager=True, callback=_print_version,
        help="Print the installed version and exit.")] = False) -> None:
    """Options before any command (the command groups follow)."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


# typer >= 0.22 ships its own copy of click (typer._click) and raises its exceptions; a
# command may still raise plain click's. Catch both families, one line per error.
_CLICK_MODULES: list[Any] = [click.exceptions]
if (_vendored := getattr(typer, "_click", None)) is not None:
    _CLICK_MODULES.append(_vendored.exceptions)


def _click_errors(name: str) -> tuple[type[Any], ...]:
    return tuple(getattr(m, name) for m in _CLICK_MODULES if hasattr(m, name))


_ABORT = _click_errors("Abort")
_EXIT = _click_errors("Exit")
_CLICK_ERROR = _click_errors("ClickException")
_NO_ARGS_IS_HELP = _click_errors("NoArgsIsHelpError")


def prose(text: str) -> str:
    """A help text with the lines of each paragraph joined: rich keeps a docstring's line
    breaks and wraps every line again, which breaks sentences mid-line at other widths.
    Blank lines still separate paragraphs; one starting with ``\\b`` keeps its lines."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split())
                       for p in paragraphs)


def root_command() -> Any:
    """The click command tree of :data:`app`, every help text made :func:`prose`."""
    root: Any = typer.main.get_command(app)
    todo = [root]
    while todo:
        command = todo.pop()
        if command.help:
            command.help = prose(command.help)
        todo.extend(getattr(command, "commands", {}).values())
    return root


def main(argv: Sequence[str] | None = None) -> int:
    command = root_command()
    try:
        # Without standalone mode click returns a command's typer.Exit code instead of
        # raising it: that is the exit code (None when the command just returned).
        code = command.main(args=list(argv) if argv is not None else None,
                            prog_name="channelcast", standalone_mode=False)
    except ChannelcastError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except _ABORT:
        click.echo("aborted", err=True)
        return 130
    except _EXIT as exc:
        return int(exc.exit_code)
    except _CLICK_ERROR as exc:
        if isinstance(exc, _NO_ARGS_IS_HELP):  # the "error" is the help text: show it
            exc.show()
            return int(exc.exit_code)
        message = " ".join(exc.format_message().split())
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        click.echo(f"error: {message}{hint}", err=True)
        return int(exc.exit_code)
    return code if isinstance(code, int) else 0


def run() -> None:
    sys.exit(main())
