"""Options shared by several commands (the config file, the Kafka cluster, the timeout),
and the usage line of commands with arguments.

The config file's environment variable (``CHANNELCAST_CONFIG``) is read by
:func:`~channelcast.config.load_settings` itself, not by the option, so an error about the
file names the variable when the path came from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand

if TYPE_CHECKING:
    from channelcast.config import Settings

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", metavar="FILE",
                 help="Config file (TOML or YAML); default: $CHANNELCAST_CONFIG, else "
                      "the built-in defaults. Environment variables override it."),
]

TimeoutOption = Annotated[float | None, typer.Option(
    "--timeout", min=0.1, metavar="SECONDS",
    help="Seconds to wait for Kafka (default: kafka.timeout_s).")]


def settings_from(config: Path | None) -> Settings:
    """The settings for a command: ``--config``, else ``$CHANNELCAST_CONFIG``, plus the
    environment (ConfigError naming the key, variable or file)."""
    from channelcast.config import load_settings  # pydantic: not needed for --help

    return load_settings(config)


def bootstrap_from(value: str | None, option: str) -> str | None:
    """A ``--bootstrap``/``--brokers`` value checked at once (ConfigError naming
    ``option``); a ``kafka://`` prefix is accepted."""
    from channelcast.config import parse_bootstrap

    return None if value is None else parse_bootstrap(value, option)


class PlainUsage(TyperCommand):
    """A command whose usage line names its arguments the usual way, ``CHANNEL...``
    (``[NAME]...`` when optional), instead of typer's ``{channels}...``. Give the
    argument a ``metavar`` and describe it in the command's help."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = param.metavar or (param.name or "").upper()
            name = name if param.required else f"[{name}]"
            pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces
