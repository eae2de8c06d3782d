"""Migration off legacy one-topic-per-channel topics onto the grouped topics of the mapping.

Each legacy record is read as every consumer reads it (:func:`channelcast.ingest.to_record`:
channelcast's own records as they are; the original's and other producers' envelopes with
their timestamps normalised to milliseconds and a deterministic id when they have none;
other JSON wrapped as data), then written keyed by its channel to the topic and partition
the configured (grouped) strategy routes it to, with that envelope, so its ``id``
survives. A record no consumer would accept is malformed here too. Per-channel order
holds because each legacy partition is read in order and written through one idempotent
producer that keeps per-partition order.

Resuming without gaps or visible duplicates rests on a local checkpoint file, written
atomically after every acknowledged batch:

* ``sources``: the next offset to copy of every legacy partition. Everything before it is
  acknowledged in the target.
* ``target_floor``: per target partition, the offset just after the last acknowledged write
  of the last checkpoint (raised to the partition's end every 10 s, when all earlier writes
  are acknowledged). Writes made after that checkpoint (a killed run) can only sit
  at or after it. On resume the tail from the floor to the end is scanned for ids, and the
  legacy messages whose id is already there are skipped, not written again.
* ``target_start``: where the target partitions ended when the migration began; the
  verification reads from there.

The checkpoint is written once before the first write, so even a run killed before its
first checkpoint resumes correctly. It must stay on the machine that runs the migration.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from channelcast.brokers.base import HEADER_CHANNEL, HEADER_EVENT, HEADER_ID
from channelcast.errors import (
    BrokerError,
    ConfigError,
    HistoryUnavailable,
    MalformedMessage,
)
from channelcast.ingest import Skipped, to_record
from channelcast.message import Envelope, decode, encode
from channelcast.ops.layout import partition_for
from channelcast.strategies import create_strategy
from channelcast.strategies.base import TopicStrategy, partitions_text
from channelcast.types import ChannelName

if TYPE_CHECKING:
    from channelcast.brokers.kafka.admin import KafkaAdmin
    from channelcast.brokers.kafka.reader import RawMessage
    from channelcast.config import Settings

TP = tuple[str, int]
CHECKPOINT_VERSION = 1
REDISCOVER_EVERY_S = 5.0
RAISE_FLOORS_EVERY_S = 10.0


def _tp_key(tp: TP) -> str:
    return f"{tp[0]}:{tp[1]}"


def _tp_parse(text: str) -> TP:
    topic, _, part = text.rpartition(":")
    return topic, int(part)


@dataclass(slots=True)
class Checkpoint:
    """What has been copied (see the module docstring). Saved as JSON, atomically."""

    selection: dict[str, str | None]
    sources: dict[TP, int] = field(default_factory=dict)
    target_floor: dict[TP, int] = field(default_factory=dict)
    target_start: dict[TP, int] = field(default_factory=dict)
    copied: int = 0
    skipped_duplicates: int = 0
    skipped_malformed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"version": CHECKPOINT_VERSION, "selection": self.selection,
                "sources": {_tp_key(k): v for k, v in sorted(self.sources.items())},
                "target_floor": {_tp_key(k): v for k, v in sorted(self.target_floor.items())},
                "target_start": {_tp_key(k): v for k, v in sorted(self.target_start.items())},
                "copied": self.copied, "skipped_duplicates": self.skipped_duplicates,
                "skipped_malformed": self.skipped_malformed,
                "updated_ms": int(time.time() * 1000)}

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.to_json(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError("--checkpoint", f"cannot read checkpoint {path}: {exc}") from exc
        try:
            if raw.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"unknown version {raw.get('version')!r}")
            return cls(
                selection=dict(raw["selection"]),
                sources={_tp_parse(k): int(v) for k, v in raw["sources"].items()},
                target_floor={_tp_parse(k): int(v) for k, v in raw["target_floor"].items()},
                target_start={_tp_parse(k): int(v) for k, v in raw["target_start"].items()},
                copied=int(raw["copied"]), skipped_duplicates=int(raw["skipped_duplicates"]),
                skipped_malformed=int(raw["skipped_malformed"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError("--checkpoint", f"{path} is not a migration checkpoint: "
                              f"{exc}") from exc


@dataclass(frozen=True, slots=True)
class SourcePlan:
    """One legacy topic: its messages and where its channel goes."""

    topic: str
    partitions: int
    messages: int
    remaining: int
    channel: str | None
    target: str | None
    target_partition: int | None


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    """The dry run. ``target_partition`` of each source is by the target topic's real
    partition count when it exists; ``problem`` is why the real run would refuse to start
    (a missing target topic, or one whose partition count differs from the config's),
    None when it would start."""

    sources: tuple[SourcePlan, ...]
    targets: tuple[str, ...]
    resumed: bool
    problem: ConfigError | None = None

    @property
    def messages(self) -> int:
        return sum(s.messages for s in self.sources)

    @property
    def remaining(self) -> int:
        return sum(s.remaining for s in self.sources)

    def to_dict(self) -> dict[str, Any]:
        return {"resumed": self.resumed, "targets": list(self.targets),
                "problem": None if self.problem is None else str(self.problem),
                "messages": self.messages, "remaining": self.remaining,
                "sources": [{"topic": s.topic, "partitions": s.partitions,
                             "messages": s.messages, "remaining": s.remaining,
                             "channel": s.channel, "target": s.target,
                             "target_partition": s.target_partition} for s in self.sources]}


@dataclass(frozen=True, slots=True)
class Progress:
    copied: int
    skipped_duplicates: int
    total: int
    channels: int
    channels_total: int


@dataclass(frozen=True, slots=True)
class MigrationReport:
    copied: int
    skipped_duplicates: int
    skipped_malformed: int
    malformed_positions: tuple[str, ...]
    per_channel: Mapping[str, int]
    seconds: float
    finished: bool

    def to_dict(self) -> dict[str, Any]:
        return {"copied": self.copied, "skipped_duplicates": self.skipped_duplicates,
                "skipped_malformed": self.skipped_malformed,
                "malformed_positions": list(self.malformed_positions),
                "channels": len(self.per_channel), "seconds": round(self.seconds, 3),
                "finished": self.finished}


@dataclass(frozen=True, slots=True)
class ChannelCheck:
    channel: str
    source: int
    target: int
    duplicates: int
    missing: int
    in_order: bool

    @property
    def ok(self) -> bool:
        return (self.source == self.target and not self.duplicates and not self.missing
                and self.in_order)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    channels: tuple[ChannelCheck, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.channels)

    @property
    def failures(self) -> tuple[ChannelCheck, ...]:
        return tuple(c for c in self.channels if not c.ok)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "channels": len(self.channels),
                "source_messages": sum(c.source for c in self.channels),
                "target_messages": sum(c.target for c in self.channels),
                "failures": [{"channel": c.channel, "source": c.source, "target": c.target,
                              "duplicates": c.duplicates, "missing": c.missing,
                              "in_order": c.in_order} for c in self.failures]}


@dataclass(frozen=True, slots=True)
class Selection:
    """Which legacy topics: names starting with ``prefix``, or matching ``pattern`` (regex)."""

    prefix: str | None = None
    pattern: str | None = None

    def __post_init__(self) -> None:
        if (self.prefix is None) == (self.pattern is None):
            raise ConfigError("--prefix/--pattern", "give exactly one of them")
        if self.prefix == "":
            raise ConfigError("--prefix", "must not be empty")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ConfigError("--pattern", f"not a regular expression: {exc}") from exc

    @classmethod
    def legacy(cls, settings: Settings) -> Selection:
        """The one-per-channel strategy's topics: ``{topic_prefix}_*``."""
        return cls(prefix=f"{settings.kafka.topic_prefix}_")

    def matches(self, topic: str) -> bool:
        if topic.startswith("__"):
            return False
        if self.prefix is not None:
            return topic.startswith(self.prefix)
        return re.fullmatch(self.pattern or "", topic) is not None

    def to_dict(self) -> dict[str, str | None]:
        return {"prefix": self.prefix, "pattern": self.pattern}


def _target_strategy(settings: Settings) -> TopicStrategy:
    strategy = create_strategy(settings.kafka)
    if strategy.name == "one-per-channel":
        raise ConfigError("kafka.topic_strategy", "the migration target must be the grouped "
                          "strategy (set kafka.topic_strategy = \"grouped\" and a topic_mapping)")
    return strategy


def find_sources(admin: KafkaAdmin, selection: Selection,
                 exclude: Iterable[str] = ()) -> list[str]:
    skip = set(exclude)
    return [t for t in admin.list_topics() if selection.matches(t) and t not in skip]


def _check_targets(admin: KafkaAdmin, strategy: TopicStrategy) -> dict[TP, int]:
    """Target partitions and their current ends; every target topic must exist as declared."""
    specs = strategy.topics()
    have = admin.partitions(s.name for s in specs)
    for spec in specs:
        if spec.name not in have:
            raise ConfigError("kafka.topic_mapping", f"target topic {spec.name!r} does not "
                              "exist; run `channelcast topics apply` first")
        if have[spec.name] != spec.partitions:
            raise ConfigError("kafka.topic_mapping", (
                f"target topic {spec.name!r} has {partitions_text(have[spec.name])} on the "
                "cluster "
                f"but the config says {spec.partitions}; channels would be routed wrongly"))
    return {(w.topic, w.partition): w.high for w in admin.watermarks(have)}


def _read(msg: RawMessage) -> Envelope | Skipped:
    """The legacy record as every consumer reads it (:func:`~channelcast.ingest.to_record`),
    or why none would."""
    got = to_record(msg.value, msg.key, list(msg.headers.items()), msg.topic, msg.partition,
                    msg.offset, msg.timestamp_ms)
    if isinstance(got, Skipped):
        return got
    try:
        return got.envelope
    except MalformedMessage as exc:  # channelcast's own shape, bytes that do not decode
        return Skipped(str(exc))


def _envelope(msg: RawMessage) -> Envelope:
    """The legacy record's envelope (:func:`_read`); MalformedMessage naming its position
    for a record no consumer would accept."""
    got = _read(msg)
    if isinstance(got, Skipped):
        raise MalformedMessage(f"{msg.topic}:{msg.partition}:{msg.offset}: {got.reason}")
    return got


def _id_of(msg: RawMessage) -> str | None:
    mid = msg.header(HEADER_ID)
    if mid:
        return mid
    try:
        return decode(msg.value).id
    except MalformedMessage:
        return None


def _sample_channels(bootstrap: str, lows: Mapping[TP, tuple[int, int]],
                     timeout_s: float) -> dict[str, str]:
    """The channel of the first held message of each legacy topic (for the dry run)."""
    from channelcast.brokers.kafka.reader import read_ranges

    first = {tp: (lo, lo + 1) for tp, (lo, hi) in lows.items() if hi > lo}
    out: dict[str, str] = {}
    for msg in read_ranges(bootstrap, first, timeout_s=timeout_s):
        got = _read(msg)
        out.setdefault(msg.topic, "?malformed" if isinstance(got, Skipped) else got.channel)
    return out


def plan_migration(settings: Settings, admin: KafkaAdmin, selection: Selection,
                   checkpoint_path: Path | None = None) -> MigrationPlan:
    """The dry run: legacy topics, their counts, what is left, where each channel goes
    (by the target topics' real partition counts), and whether the real run would start:
    it checks the target topics exactly as :func:`migrate` does (``problem``)."""
    strategy = _target_strategy(settings)
    targets = [s.name for s in strategy.topics()]
    problem: ConfigError | None = None
    try:
        _check_targets(admin, strategy)
    except ConfigError as exc:
        problem = exc
    real = admin.partitions(targets)
    sources = find_sources(admin, selection, exclude=targets)
    checkpoint = Checkpoint.load(checkpoint_path) if checkpoint_path else None
    marks = {(w.topic, w.partition): (w.low, w.high) for w in admin.watermarks(sources)}
    channels = _sample_channels(admin.bootstrap, marks, admin.timeout_s)
    rows: list[SourcePlan] = []
    for topic in sources:
        tps = {tp: lh for tp, lh in marks.items() if tp[0] == topic}
        done = checkpoint.sources if checkpoint else {}
        remaining = sum(hi - max(lo, done.get(tp, lo)) for tp, (lo, hi) in tps.items())
        channel = channels.get(topic)
        route = (strategy.route(ChannelName(channel))
                 if channel and not channel.startswith("?") else None)
        partition = route.partition if route else None
        if route is not None and route.topic in real:
            partition = partition_for(strategy, route.key, real[route.topic])
        rows.append(SourcePlan(topic, len(tps), sum(hi - lo for lo, hi in tps.values()),
                               max(0, remaining), channel, route.topic if route else None,
                               partition))
    return MigrationPlan(tuple(rows), tuple(targets), checkpoint is not None, problem)


def migrate(settings: Settings, admin: KafkaAdmin, selection: Selection, checkpoint_path: Path,
            *, follow: bool = False, stop: threading.Event | None = None,
            batch_size: int = 500, max_rate: float | None = None, limit: int | None = None,
            skip_malformed: bool = False,
            on_progress: Callable[[Progress], None] | None = None) -> MigrationReport:
    """Copy legacy messages onto the grouped topics, resuming from ``checkpoint_path``.

    Without ``follow`` it stops once every legacy partition is copied up to the end it had
    when the run started; with ``follow`` it keeps copying new messages (and new legacy
    topics) until ``stop`` is set. ``limit`` stops after about that many copies (whole
    batches). A malformed legacy message stops the run with MalformedMessage naming its
    position (everything before it is checkpointed), unless ``skip_malformed``.
    """
    with _exclusive(checkpoint_path):
        return _copy(settings, admin, selection, checkpoint_path, follow=follow, stop=stop,
                     batch_size=batch_size, max_rate=max_rate, limit=limit,
                     skip_malformed=skip_malformed, on_progress=on_progress)


@contextmanager
def _exclusive(checkpoint_path: Path) -> Iterator[None]:
    """One migration per checkpoint: a second one would write every message twice.

    An advisory lock on ``<checkpoint>.lock``; the kernel drops it when the process dies,
    even by SIGKILL, so a killed run never blocks its resumption.
    """
    lock_path = checkpoint_path.with_name(checkpoint_path.name + ".lock")
    with open(lock_path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError("--checkpoint", (
                f"another migration is running with {checkpoint_path} "
                f"(lock {lock_path} is held)")) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _copy(settings: Settings, admin: KafkaAdmin, selection: Selection, checkpoint_path: Path,
          *, follow: bool, stop: threading.Event | None, batch_size: int,
          max_rate: float | None, limit: int | None, skip_malformed: bool,
          on_progress: Callable[[Progress], None] | None) -> MigrationReport:
    from channelcast.brokers.kafka.reader import LogReader, LogWriter, read_ranges

    if batch_size < 1:
        raise ConfigError("--batch-size", "must be >= 1")
    stop = stop or threading.Event()
    started = time.monotonic()
    strategy = _target_strategy(settings)
    target_names = [s.name for s in strategy.topics()]
    target_ends = _check_targets(admin, strategy)
    sources = find_sources(admin, selection, exclude=target_names)
    if not sources and not follow:
        raise ConfigError("--prefix/--pattern", f"no legacy topics match {selection.to_dict()}")
    marks = {(w.topic, w.partition): (w.low, w.high) for w in admin.watermarks(sources)}

    checkpoint = Checkpoint.load(checkpoint_path)
    resumed = checkpoint is not None
    if checkpoint is None:
        checkpoint = Checkpoint(selection=selection.to_dict(), target_floor=dict(target_ends),
                                target_start=dict(target_ends))
    elif checkpoint.selection != selection.to_dict():
        raise ConfigError("--checkpoint", (
            f"{checkpoint_path} belongs to a migration of {checkpoint.selection}, not "
            f"{selection.to_dict()}; use another --checkpoint file"))
    for tp, end in target_ends.items():
        checkpoint.target_floor.setdefault(tp, end)
        checkpoint.target_start.setdefault(tp, end)
    for tp, (low, _) in marks.items():
        done = checkpoint.sources.setdefault(tp, low)
        if done < low:
            raise HistoryUnavailable(
                f"legacy messages {tp[0]}[{tp[1]}] {done}..{low - 1} were removed by retention "
                "before they were copied")
    checkpoint.save(checkpoint_path)  # before the first write: a kill now resumes cleanly

    seen: set[str] = set()
    if resumed:
        tail = {tp: (checkpoint.target_floor[tp], end) for tp, end in target_ends.items()
                if end > checkpoint.target_floor[tp]}
        for msg in read_ranges(admin.bootstrap, tail, timeout_s=admin.timeout_s):
            mid = _id_of(msg)
            if mid:
                seen.add(mid)

    ends = {tp: hi for tp, (_, hi) in marks.items()}
    total = sum(hi - checkpoint.sources[tp] for tp, hi in ends.items())
    per_channel: Counter[str] = Counter()
    malformed: list[str] = []
    copied = dupes = bad = 0
    finished = False
    max_bytes = settings.kafka.max_message_bytes

    def report() -> None:
        if on_progress is not None:
            on_progress(Progress(copied, dupes, total, len(per_channel), len(sources)))

    def pending() -> dict[TP, int]:
        return {tp: checkpoint.sources[tp] for tp, hi in ends.items()
                if follow or checkpoint.sources[tp] < hi}

    with LogReader(admin.bootstrap, timeout_s=admin.timeout_s) as reader, \
            LogWriter(admin.bootstrap, timeout_s=admin.timeout_s) as writer:
        reader.assign(pending())
        last_discovery = floors_raised = time.monotonic()
        idle_rounds = 0
        report()
        while not stop.is_set():
            if not follow and all(checkpoint.sources[tp] >= hi for tp, hi in ends.items()):
                finished = True
                break
            if limit is not None and copied >= limit:
                break
            if follow and time.monotonic() - last_discovery > REDISCOVER_EVERY_S:
                last_discovery = time.monotonic()
                fresh = [t for t in find_sources(admin, selection, exclude=target_names)
                         if t not in sources]
                if fresh:
                    sources.extend(fresh)
                    new = {(w.topic, w.partition): w.low for w in admin.watermarks(fresh)}
                    for tp, low in new.items():
                        checkpoint.sources.setdefault(tp, low)
                        ends[tp] = 0
                    reader.add({tp: checkpoint.sources[tp] for tp in new})
            want = batch_size if limit is None else max(1, min(batch_size, limit - copied))
            msgs = reader.poll(want, 0.5)
            if not msgs:
                idle_rounds += 1
                if not follow and idle_rounds >= 4:
                    # Offsets with no message (transaction markers, compaction) at the end:
                    # trust the reader's positions to finish.
                    for tp, pos in reader.positions().items():
                        if tp in checkpoint.sources and pos >= checkpoint.sources[tp]:
                            checkpoint.sources[tp] = pos
                    checkpoint.save(checkpoint_path)
                    if idle_rounds * 0.5 > admin.timeout_s + 5:
                        short = sorted(tp for tp, hi in ends.items()
                                       if checkpoint.sources[tp] < hi)
                        raise BrokerError(
                            f"no legacy messages arrive although {len(short)} partition(s) "
                            f"are short of their end (first: {short[0][0]}[{short[0][1]}] at "
                            f"{checkpoint.sources[short[0]]} of {ends[short[0]]}); progress "
                            "is checkpointed, rerun to resume", retriable=True)
                continue
            idle_rounds = 0
            before = (copied, dupes, bad)
            moved: dict[TP, int] = {}
            failure: MalformedMessage | None = None
            for msg in msgs:
                tp = (msg.topic, msg.partition)
                if msg.offset < checkpoint.sources.get(tp, 0):
                    continue
                try:
                    env = _envelope(msg)
                except MalformedMessage as exc:
                    if not skip_malformed:
                        failure = exc
                        break
                    bad += 1
                    if len(malformed) < 100:
                        malformed.append(f"{msg.topic}:{msg.partition}:{msg.offset}")
                    moved[tp] = msg.offset + 1
                    continue
                moved[tp] = msg.offset + 1
                if env.id in seen:
                    dupes += 1
                    continue
                if max_rate:  # pace each write, so the cluster sees a steady stream
                    ahead = (copied + 1) / max_rate - (time.monotonic() - started)
                    if ahead > 0.002:
                        time.sleep(ahead)
                route = strategy.route(env.channel)
                writer.write(route.topic, route.partition, route.key,  # a verbatim copy:
                             encode(env, max_bytes, check_event=False),  # no event rules
                             [(HEADER_CHANNEL, env.channel.encode()),
                              (HEADER_EVENT, env.event.encode()), (HEADER_ID, env.id.encode())],
                             msg.timestamp_ms)  # keep the legacy create time (retention)
                per_channel[env.channel] += 1
                copied += 1
            for d in writer.flush():  # raises PublishError: nothing is checkpointed then
                checkpoint.target_floor[(d.topic, d.partition)] = d.offset + 1
            checkpoint.sources.update(moved)
            checkpoint.copied += copied - before[0]
            checkpoint.skipped_duplicates += dupes - before[1]
            checkpoint.skipped_malformed += bad - before[2]
            if time.monotonic() - floors_raised > RAISE_FLOORS_EVERY_S:
                # Everything written so far is acknowledged, so our later writes can only
                # land at or after today's ends: a resume need not scan below them (this
                # matters when live publishers also write to the targets, e.g. --follow).
                floors_raised = time.monotonic()
                for w in admin.watermarks(target_names):
                    tp = (w.topic, w.partition)
                    checkpoint.target_floor[tp] = max(checkpoint.target_floor.get(tp, 0), w.high)
            checkpoint.save(checkpoint_path)
            report()  # what was copied before a failure counts too
            if failure is not None:
                raise failure
    report()
    return MigrationReport(copied, dupes, bad, tuple(malformed), dict(per_channel),
                           time.monotonic() - started, finished)


def verify_migration(settings: Settings, admin: KafkaAdmin, selection: Selection,
                     checkpoint_path: Path | None = None) -> VerifyReport:
    """Compare per channel: the ids in the legacy topics against the ids in the targets.

    Counts each channel's legacy messages and finds each id in the target topics (read from
    where the migration started, per the checkpoint; else from the oldest held offset).
    A channel passes when every id is there exactly once and in the legacy order.
    """
    from channelcast.brokers.kafka.reader import read_ranges

    strategy = _target_strategy(settings)
    target_names = [s.name for s in strategy.topics()]
    sources = find_sources(admin, selection, exclude=target_names)
    checkpoint = Checkpoint.load(checkpoint_path) if checkpoint_path else None
    source_marks = {(w.topic, w.partition): (w.low, w.high) for w in admin.watermarks(sources)}
    expected: dict[str, list[str]] = defaultdict(list)
    for msg in read_ranges(admin.bootstrap, source_marks, timeout_s=admin.timeout_s):
        env = _read(msg)  # the same reading as the copy: the same ids
        if isinstance(env, Skipped):
            continue
        expected[env.channel].append(env.id)
    wanted = {mid: ch for ch, ids in expected.items() for mid in ids}
    start = checkpoint.target_start if checkpoint else {}
    target_marks = {(w.topic, w.partition): (max(w.low, start.get((w.topic, w.partition), 0)),
                                             w.high)
                    for w in admin.watermarks(target_names)}
    found: dict[str, list[str]] = defaultdict(list)
    for msg in read_ranges(admin.bootstrap, target_marks, timeout_s=admin.timeout_s):
        mid = _id_of(msg)
        if mid is not None and mid in wanted:
            found[wanted[mid]].append(mid)
    checks: list[ChannelCheck] = []
    for channel, ids in sorted(expected.items()):
        got = found.get(channel, [])
        distinct = list(dict.fromkeys(got))
        present = set(distinct)
        order = [i for i in ids if i in present]
        checks.append(ChannelCheck(channel, len(ids), len(distinct), len(got) - len(distinct),
                                   len(ids) - len(order), distinct == order))
    return VerifyReport(tuple(checks))
