"""Finding the peers the benchmark compares channelcast with, and saying why one is
missing.

Owns the layout of the peers folder that ``scripts/bench-peers`` fills (the two must agree;
a test reads the script and holds them equal)::

    $CHANNELCAST_PEERS_DIR  (default ${XDG_CACHE_HOME:-~/.cache}/channelcast/peers)
      centrifugo-6.9.1/centrifugo      go install github.com/centrifugal/centrifugo/v6@v6.9.1
      sockudo-5.2.0/bin/sockudo        cargo install sockudo --version 5.2.0 --root ...

and the Python peers, which are packages of the ``peers`` extra in the same environment.
The folder is the one given (``--peers-dir``) or the environment's default: this module
never searches elsewhere, never walks up the file system and never builds anything.
Every lookup returns a :class:`Peer` whose ``missing`` is the "not run" reason, never an
exception.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

PEERS_DIR_ENV = "CHANNELCAST_PEERS_DIR"
"""Where the peers folder is read from when ``--peers-dir`` is not given."""

CENTRIFUGO_VERSION = "6.9.1"
SOCKUDO_VERSION = "5.2.0"

INSTALL_HINT = "run scripts/bench-peers from a channelcast checkout"
PYTHON_HINT = "pip install 'channelcast[peers]' (or scripts/bench-peers)"


def default_peers_dir(env: dict[str, str] | None = None) -> Path:
    """``$CHANNELCAST_PEERS_DIR``, else ``${XDG_CACHE_HOME:-$HOME/.cache}/channelcast/peers``."""
    env = dict(os.environ) if env is None else env
    if env.get(PEERS_DIR_ENV):
        return Path(env[PEERS_DIR_ENV]).expanduser()
    cache = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(cache).expanduser() / "channelcast" / "peers"


@dataclass(frozen=True, slots=True)
class Peer:
    """One peer: ``version`` when found, ``path`` for a binary, else ``missing`` says why."""

    name: str
    version: str = ""
    path: Path | None = None
    missing: str = ""

    @property
    def found(self) -> bool:
        return not self.missing


def centrifugo_binary(peers_dir: Path) -> Path:
    return peers_dir / f"centrifugo-{CENTRIFUGO_VERSION}" / "centrifugo"


def sockudo_binary(peers_dir: Path) -> Path:
    return peers_dir / f"sockudo-{SOCKUDO_VERSION}" / "bin" / "sockudo"


def _binary(name: str, version: str, path: Path, version_args: list[str]) -> Peer:
    if not path.is_file():
        return Peer(name, missing=f"{path} is not built ({INSTALL_HINT})")
    if not os.access(path, os.X_OK):
        return Peer(name, missing=f"{path} is not executable")
    try:
        subprocess.run([str(path), *version_args], capture_output=True, timeout=30,
                       check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return Peer(name, missing=f"{path} does not run: {exc}")
    return Peer(name, version=version, path=path)


def find_centrifugo(peers_dir: Path) -> Peer:
    """Centrifugo as ``go install`` built it. Its ``version`` command prints 0.0.0 for
    such builds (the release version comes from a linker flag), so the version is the
    module version the folder was built from."""
    return _binary("Centrifugo", CENTRIFUGO_VERSION, centrifugo_binary(peers_dir),
                   ["version"])


def find_sockudo(peers_dir: Path) -> Peer:
    return _binary("sockudo", SOCKUDO_VERSION, sockudo_binary(peers_dir), ["--version"])


def find_python_peer(name: str, distribution: str, *modules: str) -> Peer:
    """A Python peer: the distribution's installed version, provided each module imports."""
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return Peer(name, missing=f"{distribution} is not installed ({PYTHON_HINT})")
    for module in modules:
        try:
            __import__(module)
        except ImportError as exc:
            return Peer(name, missing=f"{module} cannot be imported ({exc}; {PYTHON_HINT})")
    return Peer(name, version=version)


def package_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"
