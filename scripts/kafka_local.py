#!/usr/bin/env python3
"""A local Apache Kafka (KRaft, no ZooKeeper) for development, tests and CI.

Owns: resolving the official broker jars from Maven Central (kafka/pom.xml) into
.kafka/libs, formatting KRaft storage, starting 1..N combined broker+controller nodes on
loopback, waiting until every node answers a Metadata request, and stopping them.

Standard library only: it must run before the project's virtualenv exists. It never speaks
the Kafka protocol itself: readiness is asked of the broker by Kafka's own client, the
BrokerApiVersionsCommand tool from the same jars. The test suite imports this module to
run private clusters it may kill and restart.

    scripts/kafka start [--brokers 3] [--name dev] [--port 19092]
    scripts/kafka status|stop [--name dev]
    scripts/kafka fetch
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("CHANNELCAST_KAFKA_HOME", ROOT / ".kafka"))
LIBS = HOME / "libs"
POM = ROOT / "kafka" / "pom.xml"
LOG4J = ROOT / "kafka" / "log4j2.properties"
DEFAULT_PORT = 19092


class KafkaLocalError(RuntimeError):
    """The local broker could not be fetched, started or stopped."""


def fetch(quiet: bool = False) -> Path:
    """Resolve the pinned Kafka jars into .kafka/libs (and the probe's class archive); a
    no-op when the pom is unchanged and both are there."""
    stamp = HOME / "libs.sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest and any(LIBS.glob("kafka_*.jar")):
        if not PROBE_CLASSES.exists():
            _archive_probe_classes()
        return LIBS
    if shutil.which("mvn") is None:
        raise KafkaLocalError("Maven (mvn) is not installed; it is needed to fetch the Kafka jars")
    if LIBS.exists():
        shutil.rmtree(LIBS)
    PROBE_CLASSES.unlink(missing_ok=True)  # archived from the old jars
    LIBS.mkdir(parents=True)
    if not quiet:
        print(f"fetching Kafka jars with Maven into {LIBS} ...", file=sys.stderr)
    cmd = ["mvn", "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={LIBS}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KafkaLocalError(f"mvn failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    _archive_probe_classes()
    stamp.write_text(digest)
    return LIBS


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaLocalError("java is not installed (Kafka 4 needs Java 17+)")
    return java


# What Kafka's own start scripts give the broker JVM (kafka-run-class.sh's performance
# options): G1 aiming at 20 ms pauses. The JVM's default aims at 200 ms, and its young
# collections then stalled acknowledgements by 27-55 ms here.
BROKER_JVM_OPTIONS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                      "-XX:InitiatingHeapOccupancyPercent=35",
                      "-XX:+ExplicitGCInvokesConcurrent", "-XX:MaxInlineLevel=15",
                      "-Djava.awt.headless=true")


def java_command(main_class: str, *args: str, heap: str = "256m",
                 jvm_options: tuple[str, ...] = ()) -> list[str]:
    """A java command line with the Kafka jars on the classpath (also for Kafka's tools)."""
    return [_java(), f"-Xmx{heap}", *jvm_options, f"-Dlog4j2.configurationFile={LOG4J}",
            "-cp", f"{LIBS}/*", main_class, *args]


@dataclass
class Cluster:
    """N combined broker+controller nodes on 127.0.0.1, state kept under .kafka/<name>."""

    name: str = "dev"
    brokers: int = 1
    port: int = DEFAULT_PORT

    @property
    def dir(self) -> Path:
        return HOME / self.name

    def broker_port(self, node: int) -> int:
        return self.port + 2 * (node - 1)

    def controller_port(self, node: int) -> int:
        return self.port + 2 * (node - 1) + 1

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.broker_port(n)}" for n in self.nodes)

    @property
    def nodes(self) -> range:
        return range(1, self.brokers + 1)

    def _props(self, node: int) -> str:
        voters = ",".join(f"{n}@127.0.0.1:{self.controller_port(n)}" for n in self.nodes)
        rf = min(3, self.brokers)
        return "\n".join([
            "process.roles=broker,controller",
            f"node.id={node}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.broker_port(node)},"
            f"CONTROLLER://127.0.0.1:{self.controller_port(node)}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.broker_port(node)}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.dir / f'node{node}' / 'data'}",
            f"offsets.topic.replication.factor={rf}",
            "offsets.topic.num.partitions=10",
            f"transaction.state.log.replication.factor={rf}",
            "transaction.state.log.min.isr=1",
            f"default.replication.factor={1 if self.brokers < 3 else 3}",
            "min.insync.replicas=1",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "group.initial.rebalance.delay.ms=0",
            "log.flush.interval.messages=9223372036854775807",
            "delete.topic.enable=true",
            "",
        ])

    def _state(self) -> dict[str, int]:
        path = self.dir / "pids.json"
        if not path.exists():
            return {}
        data: dict[str, int] = json.loads(path.read_text())
        return data

    def _save_state(self, state: dict[str, int]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "pids.json").write_text(json.dumps(state))
        meta = {"brokers": self.brokers, "port": self.port, "bootstrap": self.bootstrap}
        (self.dir / "cluster.json").write_text(json.dumps(meta))

    def format(self) -> None:
        """Wipe and format KRaft storage for every node (one cluster id)."""
        fetch()
        if self.dir.exists():
            shutil.rmtree(self.dir)
        cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        for node in self.nodes:
            ndir = self.dir / f"node{node}"
            ndir.mkdir(parents=True)
            props = ndir / "server.properties"
            props.write_text(self._props(node))
            proc = subprocess.run(
                java_command("kafka.tools.StorageTool", "format", "-t", cluster_id,
                             "-c", str(props), "--ignore-formatted"),
                capture_output=True, text=True)
            if proc.returncode != 0:
                raise KafkaLocalError(f"formatting node {node} failed:\n{proc.stdout}{proc.stderr}")

    def start_node(self, node: int) -> int:
        """Start one node (storage must be formatted); returns its pid."""
        if node not in self.nodes:
            raise KafkaLocalError(f"no node {node}: nodes are numbered {list(self.nodes)}")
        ndir = self.dir / f"node{node}"
        log = open(ndir / "server.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            java_command("kafka.Kafka", str(ndir / "server.properties"), heap="768m",
                         jvm_options=("-Xms768m", *BROKER_JVM_OPTIONS)),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        _CHILDREN[proc.pid] = proc  # keep the handle: reaped by _alive(), no ResourceWarning
        state = self._state()
        state[str(node)] = proc.pid
        self._save_state(state)
        return proc.pid

    def start(self, timeout: float = 120.0) -> str:
        if self.running_nodes():
            raise KafkaLocalError(f"cluster {self.name!r} is already running: {self.bootstrap}")
        for node in self.nodes:
            for port in (self.broker_port(node), self.controller_port(node)):
                if _port_open(port):
                    raise KafkaLocalError(f"port {port} is already in use on 127.0.0.1")
        self.format()
        self._save_state({})
        for node in self.nodes:
            self.start_node(node)
        self.wait_ready(timeout)
        return self.bootstrap

    def wait_ready(self, timeout: float = 120.0, nodes: list[int] | None = None) -> None:
        """Block until each node answers Metadata and reports every expected broker.

        Raises KafkaLocalError when a node exits, or when ``timeout`` seconds pass first
        (with the last answer or error). Kafka's own client asks (a JVM, 0.7-1.5 s), so it
        is asked only once every node accepts connections, and all nodes at once.
        """
        deadline = time.monotonic() + timeout
        wanted = nodes or list(self.nodes)
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            dead = [n for n in wanted if not _alive(self._state().get(str(n), 0))]
            if dead:
                raise KafkaLocalError(
                    f"node(s) {dead} exited during start-up; see {self.dir}/node*/server.log:\n"
                    + self.tail_log(dead[0]))
            closed = [n for n in wanted if not _port_open(self.broker_port(n))]
            if closed:
                last_error = f"node(s) {closed} not accepting connections yet"
                time.sleep(0.25)
                continue
            ports = [self.broker_port(n) for n in wanted]
            budget = max(1.0, min(30.0, deadline - time.monotonic()))
            answers = probe_brokers(ports, timeout=budget)
            ok = True
            for n, port in zip(wanted, ports, strict=True):
                seen = answers[port]
                if isinstance(seen, KafkaLocalError):
                    ok = False
                    last_error = f"node {n}: {seen}"
                elif len(seen) < len(wanted):
                    ok = False
                    last_error = f"node {n} sees brokers {sorted(seen)}"
            if ok:
                return
            time.sleep(0.5)
        raise KafkaLocalError(f"Kafka did not become ready within {timeout:.0f}s: {last_error}")

    def tail_log(self, node: int, lines: int = 30) -> str:
        path = self.dir / f"node{node}" / "server.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def running_nodes(self) -> list[int]:
        return [int(n) for n, pid in self._state().items() if _alive(pid)]

    def kill_node(self, node: int, sig: int = signal.SIGKILL) -> None:
        if node not in self.nodes:
            raise KafkaLocalError(f"no node {node}: nodes are numbered {list(self.nodes)}")
        pid = self._state().get(str(node))
        if pid and _alive(pid):
            os.killpg(pid, sig)
            _wait_dead(pid, 30.0)

    def stop(self, timeout: float = 30.0) -> None:
        state = self._state()
        for pid in state.values():
            if _alive(pid):
                os.killpg(pid, signal.SIGTERM)
        for pid in state.values():
            if not _wait_dead(pid, timeout) and _alive(pid):
                os.killpg(pid, signal.SIGKILL)
                _wait_dead(pid, 10.0)
        self._save_state({})


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Nodes this process started; their Popen handles live as long as the node runs."""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        stat = Path(f"/proc/{pid}/stat")
        return stat.exists() and ") Z " not in stat.read_text()


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


PROBE_CLASS = "org.apache.kafka.tools.BrokerApiVersionsCommand"
"""Kafka's kafka-broker-api-versions tool: a Metadata request to the bootstrap broker, then
an ApiVersions request to every broker the answer lists; one block per broker on stdout."""
PROBE_JVM_OPTIONS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
"""A short-lived client: the quick compiler only and the simplest collector start faster."""
PROBE_CLASSES = HOME / "probe-classes.jsa"
"""The classes the probe loads, archived when the jars are fetched (Java's application
class-data sharing): the probe maps them instead of reading the jars, 0.6 s instead of
1.2 s here. The JVM ignores an archive that does not match its jars or its version."""
_PROBE_BROKER = re.compile(r"^(\S+:\d+) \(id: (-?\d+)\b[^)]*\) -> (ERROR: .*|\()$", re.M)


def probe_brokers(ports: list[int], host: str = "127.0.0.1",
                  timeout: float = 30.0) -> dict[int, dict[int, str] | KafkaLocalError]:
    """Ask each broker (all at once) for the cluster's brokers, with Kafka's own client.

    Returns, per port: ``{node_id: "host:port"}`` of the brokers its Metadata answer lists,
    when every one of them also answered ApiVersions; else a KafkaLocalError saying why (no
    answer, a broker in error, no answer within ``timeout`` seconds).
    """
    cds = (f"-XX:SharedArchiveFile={PROBE_CLASSES}",) if PROBE_CLASSES.exists() else ()
    procs = {port: subprocess.Popen(
        java_command(PROBE_CLASS, "--bootstrap-server", f"{host}:{port}", heap="128m",
                     jvm_options=(*PROBE_JVM_OPTIONS, *cds)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        for port in ports}
    deadline = time.monotonic() + timeout
    answers: dict[int, dict[int, str] | KafkaLocalError] = {}
    for port, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            answers[port] = KafkaLocalError(f"no answer from {host}:{port} within {timeout:.1f}s")
            continue
        answers[port] = _parse_probe(out, err, proc.returncode, f"{host}:{port}")
    return answers


def _archive_probe_classes() -> None:
    """Write PROBE_CLASSES: one probe run against a closed port loads nearly every class a
    real one does. Best effort: without the archive the probe is only slower."""
    partial = PROBE_CLASSES.with_name(f"{PROBE_CLASSES.name}.{os.getpid()}")
    try:
        subprocess.run(
            java_command(PROBE_CLASS, "--bootstrap-server", "127.0.0.1:1", heap="128m",
                         jvm_options=(*PROBE_JVM_OPTIONS, f"-XX:ArchiveClassesAtExit={partial}")),
            capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        if partial.exists():
            os.replace(partial, PROBE_CLASSES)
    except (KafkaLocalError, OSError, subprocess.SubprocessError):
        pass
    finally:
        partial.unlink(missing_ok=True)


def _parse_probe(out: str, err: str, code: int, where: str) -> dict[int, str] | KafkaLocalError:
    if code != 0:
        lines = [line for line in err.splitlines() if line.strip() and not line[0].isspace()]
        reason = lines[-1] if lines else f"exit code {code}"
        return KafkaLocalError(f"{where} did not answer: {reason}")
    brokers: dict[int, str] = {}
    for address, node_id, answer in _PROBE_BROKER.findall(out):
        if answer.startswith("ERROR"):
            return KafkaLocalError(f"broker {node_id} at {address}: {answer}")
        brokers[int(node_id)] = address
    if not brokers:
        return KafkaLocalError(f"{where} listed no brokers:\n{out[-500:]}")
    return brokers


def _load(name: str) -> Cluster:
    meta = HOME / name / "cluster.json"
    if meta.exists():
        data = json.loads(meta.read_text())
        return Cluster(name=name, brokers=data["brokers"], port=data["port"])
    return Cluster(name=name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/kafka", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser(
        "start", help="wipe and format storage (the cluster starts empty), start the "
                      "broker(s), wait until ready")
    start.add_argument("--brokers", type=int, default=1, help="number of nodes (default 1)")
    start.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"first broker port (default {DEFAULT_PORT}); node k uses port+2(k-1)")
    start.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for ready")
    for name in ("stop", "status"):
        p = sub.add_parser(name, help=f"{name} the named cluster")
        p.add_argument("--name", default="dev")
    start.add_argument("--name", default="dev", help="state folder under .kafka (default dev)")
    sub.add_parser("fetch", help="resolve the Kafka jars with Maven (cached)")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch())
        elif args.command == "start":
            cluster = Cluster(name=args.name, brokers=args.brokers, port=args.port)
            print(cluster.start(args.timeout))
        elif args.command == "stop":
            _load(args.name).stop()
        elif args.command == "status":
            cluster = _load(args.name)
            running = cluster.running_nodes()
            print(f"{cluster.name}: {len(running)}/{cluster.brokers} node(s) running"
                  + (f", bootstrap {cluster.bootstrap}" if running else ""))
            return 0 if running else 1
    except KafkaLocalError as exc:
        print(f"scripts/kafka: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
