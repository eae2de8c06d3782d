"""Options shared by every command (config file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from channelcast.config import Settings, load_settings

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="CHANNELCAST_CONFIG", show_envvar=True,
                 help="Config file (TOML or YAML). Environment variables override it."),
]


def settings_from(config: Path | None) -> Settings:
    return load_settings(config)
