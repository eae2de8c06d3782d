"""Kafka's own Java console tools, as another producer or consumer beside channelcast.

They run from the jars scripts/kafka_local.py fetched (``kafka_local.java_command``), so
what they do is what Kafka's Java clients do: the default partitioner, no channelcast
headers unless given.
"""

from __future__ import annotations

import subprocess

import kafka_local


def java_produce(bootstrap: str, topic: str, records: list[tuple[str, str]], *,
                 headers: list[dict[str, str]] | None = None) -> None:
    """Send ``(key, value)`` records through ConsoleProducer (keyed, no partition given:
    Kafka's default partitioner picks it). ``headers`` (one dict per record) are sent as
    record headers when given."""
    args = ["--bootstrap-server", bootstrap, "--topic", topic,
            "--property", "parse.key=true", "--property", "key.separator=\t",
            "--producer-property", "acks=all", "--producer-property", "linger.ms=5"]
    lines = []
    for i, (key, value) in enumerate(records):
        assert "\t" not in key
        assert "\n" not in value
        head = ""
        if headers is not None:
            head = ",".join(f"{k}:{v}" for k, v in headers[i].items()) + "|"
        lines.append(f"{head}{key}\t{value}\n")
    if headers is not None:
        args += ["--property", "parse.headers=true", "--property", "headers.delimiter=|",
                 "--property", "headers.separator=,", "--property",
                 "headers.key.separator=:"]
    cmd = kafka_local.java_command("org.apache.kafka.tools.ConsoleProducer", *args)
    proc = subprocess.run(cmd, input="".join(lines).encode(), capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, f"ConsoleProducer failed:\n{proc.stderr.decode()}"


def java_consume(bootstrap: str, topic: str, count: int) -> list[tuple[int, str, str]]:
    """The first ``count`` records of ``topic`` as ConsoleConsumer prints them:
    ``(partition, key, value)``."""
    cmd = kafka_local.java_command(
        "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", bootstrap,
        "--topic", topic, "--from-beginning", "--max-messages", str(count),
        "--timeout-ms", "30000", "--property", "print.partition=true",
        "--property", "print.key=true", "--property", "key.separator=\t")
    proc = subprocess.run(cmd, capture_output=True, timeout=120)
    out = proc.stdout.decode()
    rows = []
    for line in out.splitlines():
        if not line.startswith("Partition:"):
            continue
        part, key, value = line.split("\t", 2)
        rows.append((int(part.split(":", 1)[1]), key, value))
    assert len(rows) == count, f"ConsoleConsumer printed {len(rows)} of {count}:\n" \
        f"{out}\n{proc.stderr.decode()}"
    return rows
