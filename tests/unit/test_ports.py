"""Every fixed port the tests and scripts start a Kafka on lies below Linux's ephemeral
range (32768-60999): one taken by an outgoing connection made a cluster fail to start."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EPHEMERAL = range(32768, 61000)


def test_kafka_ports_are_outside_the_ephemeral_range() -> None:
    found: dict[str, int] = {}
    for path in [*ROOT.joinpath("tests").rglob("*.py"), *ROOT.joinpath("scripts").iterdir()]:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(r"private_cluster\(\s*\"[^\"]+\",\s*(\d+)|--port (\d{4,5})|"
                                 r"port=(\d{4,5})\)|_PORT:-(\d{4,5})", text):
            port = int(next(g for g in match.groups() if g))
            found[f"{path.relative_to(ROOT)}:{port}"] = port
    assert len(found) >= 5, found  # the scan still finds them
    # A cluster of n nodes uses port .. port + 2n - 1: leave room for three.
    bad = [where for where, port in found.items() if port + 5 in EPHEMERAL or port in EPHEMERAL]
    assert not bad, f"ports inside Linux's ephemeral range: {bad}"
