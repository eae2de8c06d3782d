"""Kafka's own Java tools, run from a folder of Kafka jars that the caller names.

Owns checking that folder, building a ``java`` command line with every jar in it on the
classpath (as Kafka's ``kafka-run-class.sh`` does), and reading the Kafka version from the
jar names. The folder is always an argument (``channelcast bench --kafka-libs DIR``):
this module must never search for jars itself, walk up the file system or import the
repository's scripts. It starts no process; the caller runs the command.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from channelcast.errors import ConfigError, MissingDependency

CLIENT_JARS = "kafka-clients-*.jar"
"""A folder holds Kafka's jars when it has the Java client (its name carries the version)."""


def check_kafka_libs(libs: Path) -> Path:
    """``libs`` as an absolute path if it holds Kafka's jars; else ConfigError naming
    ``--kafka-libs``."""
    libs = libs.expanduser().resolve()
    if not libs.is_dir():
        raise ConfigError("--kafka-libs", f"{libs} is not a folder (want Kafka's jars, "
                                          "e.g. the libs/ of a Kafka distribution)")
    if not any(libs.glob(CLIENT_JARS)):
        raise ConfigError("--kafka-libs", f"no Kafka jars ({CLIENT_JARS}) in {libs}")
    return libs


def kafka_version(libs: Path | None) -> str:
    """The version in the name of the Java client jar (e.g. ``4.1.1``), or ``unknown``."""
    if libs is None:
        return "unknown (no --kafka-libs)"
    jars = sorted(libs.glob(CLIENT_JARS))
    return jars[0].stem.removeprefix("kafka-clients-") if jars else "unknown"


def find_java() -> str:
    """``$JAVA_HOME/bin/java`` if there is one, else ``java`` on the PATH; raises
    MissingDependency when neither exists (Kafka 4 needs Java 17+)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise MissingDependency("java is not installed (Kafka's tools need Java 17+): "
                                "set JAVA_HOME or put java on the PATH")
    return java


def java_command(libs: Path, main_class: str, *args: str, heap: str = "256m") -> list[str]:
    """The argv that runs ``main_class`` with every jar of ``libs`` on the classpath and a
    ``heap`` maximum (a JVM size such as ``512m``). Logging is Log4j's default (errors
    only, to the console). Raises ConfigError for a folder without Kafka's jars and
    MissingDependency without java."""
    libs = check_kafka_libs(libs)
    # "DIR/*" is expanded by java itself (every .jar in DIR), not by a shell.
    return [find_java(), f"-Xmx{heap}", "-cp", str(libs / "*"), main_class, *args]
