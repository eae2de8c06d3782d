"""Entry point: assembles the command groups; ``main(argv)`` returns an exit code.

Every command module exposes ``register(app)``. A ChannelcastError anywhere becomes a
one-line ``error: ...`` on stderr and exit code 2, never a traceback. ``--version`` / ``-V``
prints the installed package's version (its metadata, never a second copy in the code).

``--version`` is answered before the command modules (and typer) are imported: it is what
scripts and install checks run, and it needs none of them. :func:`build_app` assembles the
commands once, on first use; ``app`` is kept as a lazy module attribute for code that
imports it.

Help text: plain click formatting (``rich_markup_mode=None``), which re-flows each
paragraph of a docstring to the terminal width, so the hard-wrapped docstrings in the
sources never show up broken mid-sentence, and flags show no type placeholder.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

COMMAND_MODULES = [
    "channelcast.cli.config_cmd",
    "channelcast.cli.topics",
    "channelcast.cli.migrate",
    "channelcast.cli.monitor",
    "channelcast.cli.serve",
    "channelcast.cli.bench",
]

VERSION_FLAGS = ("--version", "-V")


def package_version() -> str:
    """channelcast's version from the installed distribution's metadata (PEP 440 text,
    e.g. ``"0.1.0"``); ``"unknown"`` when the package runs without being installed."""
    try:
        return importlib.metadata.version("channelcast")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        import typer

        typer.echo(f"channelcast {package_version()}")
        raise typer.Exit()


@functools.cache
def build_app() -> typer.Typer:
    """The ``channelcast`` command tree (built once per process)."""
    import typer

    app = typer.Typer(
        name="channelcast",
        help="Realtime broadcasting over Apache Kafka (or the embedded memory broker).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    # A default-style option: the annotations of this module are strings resolved in its
    # globals, where typer is not (it is imported here, lazily).
    @app.callback()
    def _root(version: bool = typer.Option(
            False, "--version", "-V", is_eager=True, callback=_print_version,
            help="Print the installed version and exit.")) -> None:
        """Options before any command (the command groups follow)."""

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _click_errors() -> dict[str, tuple[type[Any], ...]]:
    """click's exception classes by name. typer >= 0.22 ships its own copy of click
    (typer._click) and raises its exceptions; a command may still raise plain click's.
    Both families, so every error is one line."""
    import click
    import typer

    modules: list[Any] = [click.exceptions]
    if (vendored := getattr(typer, "_click", None)) is not None:
        modules.append(vendored.exceptions)
    return {name: tuple(getattr(m, name) for m in modules if hasattr(m, name))
            for name in ("Abort", "Exit", "ClickException", "NoArgsIsHelpError")}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in VERSION_FLAGS:  # eager, like the option: nothing else runs
        print(f"channelcast {package_version()}")
        return 0

    import click
    import typer

    from channelcast.errors import ChannelcastError

    errors = _click_errors()
    command = typer.main.get_command(build_app())
    try:
        # Without standalone mode click returns a command's typer.Exit code instead of
        # raising it: that is the exit code (None when the command just returned).
        code = command.main(args=args, prog_name="channelcast", standalone_mode=False)
    except ChannelcastError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except errors["Abort"]:
        click.echo("aborted", err=True)
        return 130
    except errors["Exit"] as exc:
        return int(exc.exit_code)
    except errors["ClickException"] as exc:
        if isinstance(exc, errors["NoArgsIsHelpError"]):  # the "error" is the help text
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
