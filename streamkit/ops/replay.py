"""Bounded replays for backfills: one agent over a time or offset range.

A replay runs the agent through the normal runtime (its retry and
dead-letter policies included) in its own consumer group, with partitions
assigned directly, so the live group keeps running untouched. Start offsets
come from the broker's time index; end offsets are snapshotted before the
run, so a replay finishes even while producers keep writing. The group name
is derived from the app and the arguments, and the first run stores its
range beside the group (:func:`range_group`): running the same command again
resumes the same range where the last run stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.agent import Agent
from streamkit.app import App
from streamkit.errors import BrokerError, ConfigError
from streamkit.ops._admin import committed_offsets, error_text
from streamkit.topics import Topic
from streamkit.types import TopicPartition

INTERRUPTED = 3
"""The exit code of a replay stopped before the end of its range (SIGTERM,
SIGINT): what finished is committed, and the same command resumes it. Not 0,
so a Kubernetes Job is not marked Complete with part of its window undone."""

Point = datetime | dict[int, int] | int
"""A range end: a time, one offset for every partition, or offsets per partition."""


def parse_point(text: str, option: str) -> Point:
    """``2026-11-20T00:00:00Z``, ``1500`` or ``offset:1500`` (every partition), or ``0:100,3:250``.

    A bare number that is also a date (``20240601``) is refused: an operator
    who meant the first of June would replay from offset 20,240,601.

    Raises:
        ConfigError: The text is none of those, or is ambiguous.
    """
    text = text.strip()
    if text.startswith("offset:") and text[len("offset:") :].isdigit():
        return int(text[len("offset:") :])
    if text.isdigit() and len(text) == 8 and _is_date(text):
        raise ConfigError(
            option,
            f"{text!r} reads as a date and as an offset: write {text[:4]}-{text[4:6]}-{text[6:]} "
            f"for the date, or offset:{text} for the offset",
        )
    if ":" in text and "T" not in text and "-" not in text:
        try:
            pairs = (part.split(":") for part in text.split(","))
            return {int(p): int(o) for p, o in pairs}
        except ValueError:
            raise ConfigError(option, f"expected PARTITION:OFFSET[,...]; got {text!r}") from None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            option, f"expected an ISO-8601 time, an offset, or PARTITION:OFFSET; got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_date(digits: str) -> bool:
    try:
        datetime.strptime(digits, "%Y%m%d")
    except ValueError:
        return False
    return True


def check_order(start: Point | None, end: Point | None) -> None:
    """Refuse an end before its start where both are known now (times, or offsets).

    Raises:
        ConfigError: ``--to`` is before ``--from``; it would replay nothing.
    """
    if start is None or end is None:
        return
    if isinstance(start, datetime) and isinstance(end, datetime):
        if end < start:
            raise ConfigError(
                "--to", f"--to is before --from ({end.isoformat()} < {start.isoformat()})"
            )
        return
    if isinstance(start, datetime) or isinstance(end, datetime):
        return  # a time and offsets: only the resolved range tells
    starts = start if isinstance(start, dict) else None
    ends = end if isinstance(end, dict) else None
    if starts is None and ends is None:
        assert isinstance(start, int) and isinstance(end, int)
        if end < start:
            raise ConfigError("--to", f"--to is before --from ({end} < {start})")
        return
    for partition in sorted(set(starts or ends or {}) & set(ends or starts or {})):
        first = starts[partition] if starts is not None else start
        last = ends[partition] if ends is not None else end
        assert isinstance(first, int) and isinstance(last, int)
        if last < first:
            raise ConfigError(
                "--to", f"--to is before --from on partition {partition} ({last} < {first})"
            )


def _offsets_at(
    consumer: Consumer, topic: str, partitions: Sequence[int], moment: datetime, timeout: float
) -> dict[int, int]:
    """The first offset at or after ``moment`` per partition (-1: none yet)."""
    ms = int(moment.timestamp() * 1000)
    found = consumer.offsets_for_times(
        [KafkaTopicPartition(topic, p, ms) for p in partitions], timeout=timeout
    )
    return {tp.partition: tp.offset for tp in found}


def resolve_ranges(
    consumer: Consumer,
    topic: str,
    start: Point | None,
    end: Point | None,
    partitions: Sequence[int] | None = None,
    timeout: float = 30.0,
) -> dict[TopicPartition, tuple[int, int]]:
    """Per partition, ``(first offset, end offset)`` with the end exclusive and fixed now.

    Raises:
        ConfigError: The topic or a chosen partition does not exist.
        BrokerError: The broker did not answer within ``timeout`` seconds.
    """
    try:
        return _resolve(consumer, topic, start, end, partitions, timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot read {topic}: {error_text(exc)}") from None


def _resolve(
    consumer: Consumer,
    topic: str,
    start: Point | None,
    end: Point | None,
    partitions: Sequence[int] | None,
    timeout: float,
) -> dict[TopicPartition, tuple[int, int]]:
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        raise ConfigError("--agent", f"the agent's input topic {topic} does not exist")
    chosen = sorted(partitions) if partitions else sorted(meta.partitions)
    unknown = set(chosen) - set(meta.partitions)
    if unknown:
        raise ConfigError("--partitions", f"{topic} has no partition {min(unknown)}")
    marks = {
        p: consumer.get_watermark_offsets(KafkaTopicPartition(topic, p), timeout=timeout)
        for p in chosen
    }

    def at(point: Point | None, default: Callable[[int], int]) -> dict[int, int]:
        if point is None:
            return {p: default(p) for p in chosen}
        if isinstance(point, datetime):
            offsets = _offsets_at(consumer, topic, chosen, point, timeout)
            # -1: nothing at or after that time yet, so the range ends at the log end.
            return {p: marks[p][1] if o < 0 else o for p, o in offsets.items()}
        if isinstance(point, int):
            return {p: point for p in chosen}
        return {p: point.get(p, default(p)) for p in chosen}

    starts = at(start, lambda p: marks[p][0])
    ends = at(end, lambda p: marks[p][1])
    ranges = {}
    for p in chosen:
        low, high = marks[p]
        first = min(max(starts[p], low), high)
        last = min(max(ends[p], first), high)
        ranges[TopicPartition(topic, p)] = (first, last)
    return ranges


def replay_key(
    agent: str,
    start: Point | None,
    end: Point | None,
    partitions: Sequence[int] | None,
    redirect: dict[str, str],
) -> str:
    """A digest of the replay as asked for: agent, ``--from``/``--to``, partitions, redirects.

    Not of resolved offsets: those move as producers write and retention
    deletes, and a rerun of the same command must find the same group.
    """

    def norm(point: Point | None) -> object:
        if isinstance(point, datetime):
            return point.astimezone(UTC).isoformat()
        if isinstance(point, dict):
            return sorted(point.items())
        return point

    spec = json.dumps(
        [agent, norm(start), norm(end), sorted(partitions or []), sorted(redirect.items())]
    )
    return hashlib.sha1(spec.encode(), usedforsecurity=False).hexdigest()[:10]


def replay_group(app: App, agent: str, key: str) -> str:
    """The default group of a replay: the same for the same arguments, so it can resume."""
    base = app.settings.get("group_id") or app.name
    return f"{base}.replay.{agent}.{key}"


def range_group(group: str) -> str:
    """Where a replay keeps the range fixed by its first run, beside its progress in ``group``.

    The worker's commits in ``group`` carry no metadata, so the range lives in
    a group of its own that nothing consumes in: per partition, the end
    offset as the committed offset and ``streamkit-replay KEY from=FIRST`` as
    its metadata.
    """
    return f"{group}.range"


_MARK = "streamkit-replay"


def stored_ranges(
    consumer: Consumer, tps: Sequence[TopicPartition], timeout: float = 30.0
) -> dict[TopicPartition, tuple[str, int, int]]:
    """Per partition, ``(key, first, end)`` as stored by the first run (``consumer``: range group).

    Raises:
        BrokerError: The offsets could not be read within ``timeout`` seconds.
    """
    try:
        found = committed_offsets(
            consumer, [KafkaTopicPartition(tp.topic, tp.partition) for tp in tps], timeout
        )
    except KafkaException as exc:
        raise BrokerError(f"cannot read the replay's stored range: {error_text(exc)}") from None
    out = {}
    for k in found:
        mark, _, rest = (k.metadata or "").partition(" ")
        key, _, first = rest.partition(" from=")
        if k.offset >= 0 and mark == _MARK and first.isdigit():
            out[TopicPartition(k.topic, k.partition)] = (key, int(first), k.offset)
    return out


def fixed_ranges(
    resolved: dict[TopicPartition, tuple[int, int]],
    stored: dict[TopicPartition, tuple[str, int, int]],
    key: str,
    group: str,
) -> dict[TopicPartition, tuple[int, int]]:
    """The first run's range where one is stored, else the one resolved now.

    A stored end stays the end even when the log has grown since; a start
    that retention has deleted since moves up to what is left.

    Raises:
        ConfigError: ``group`` holds the range of a replay with other arguments.
    """
    out = dict(resolved)
    for tp, (stored_key, first, end) in stored.items():
        if tp not in resolved:
            continue
        if stored_key != key:
            raise ConfigError(
                "--group",
                f"group {group} holds the progress of another replay (other --agent, "
                "--from, --to, --partitions or --redirect): resuming it would skip part "
                "of this range; choose another --group",
            )
        now_first, now_end = resolved[tp]
        last = min(end, now_end)  # below only if the log was truncated
        out[tp] = (min(max(first, now_first), last), last)
    return out


def store_ranges(
    consumer: Consumer,
    ranges: dict[TopicPartition, tuple[int, int]],
    key: str,
    timeout: float = 30.0,
) -> None:
    """Commit ``ranges`` into the range group (``consumer``) before the first run starts.

    Raises:
        BrokerError: The commit failed.
    """
    if not ranges:
        return
    offsets = [
        KafkaTopicPartition(tp.topic, tp.partition, end, metadata=f"{_MARK} {key} from={first}")
        for tp, (first, end) in sorted(ranges.items())
    ]
    try:
        done = consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        raise BrokerError(f"cannot store the replay's range: {error_text(exc)}") from None
    failed = [k for k in done or [] if k.error is not None]
    if failed:
        raise BrokerError(f"cannot store the replay's range: {failed[0].error}")


def refuse_live_group(group: str, live_group: str) -> None:
    """Refuse ``--group`` naming the app's own consumer group (before connecting).

    Kafka takes offset commits from a non-member whenever the group is empty
    (stopped, crash-looping, scaled to zero): the replay's commits would
    become the live pipeline's position, skipping or reprocessing data.

    Raises:
        ConfigError: ``group`` is ``live_group``.
    """
    if group == live_group:
        raise ConfigError(
            "--group",
            f"{group} is the app's live consumer group: the replay's commits would "
            "overwrite the live pipeline's offsets (leave --group out for a group of its own)",
        )


def refuse_busy_group(admin: Any, group: str, timeout: float = 30.0) -> None:
    """Refuse a replay group that has active members: some pipeline consumes in it.

    A replay assigns its partitions without joining, so a member is never
    another replay; its commits would overwrite that pipeline's offsets.

    Raises:
        ConfigError: The group has members.
        BrokerError: The broker did not describe the group within ``timeout`` seconds.
    """
    try:
        [future] = admin.describe_consumer_groups([group], request_timeout=timeout).values()
        members = len(future.result(timeout=timeout).members)
    except KafkaException as exc:
        raise BrokerError(f"cannot describe group {group}: {error_text(exc)}") from None
    if members:
        raise ConfigError(
            "--group",
            f"group {group} has {members} active member(s): it is a running pipeline's "
            "group, and the replay's commits would overwrite its offsets",
        )


def resume_from(
    consumer: Consumer,
    ranges: dict[TopicPartition, tuple[int, int]],
    timeout: float = 30.0,
    own: Collection[TopicPartition] | None = None,
) -> dict[TopicPartition, tuple[int, int]]:
    """Move each start to the replay group's commit when it lies inside the range.

    ``own``: the partitions whose range a replay stored; a commit on any other
    is not a replay's (given ``own``).

    Raises:
        ConfigError: The group has a commit on a partition outside ``own``.
        BrokerError: The group's offsets could not be read within ``timeout`` seconds.
    """
    try:
        committed = committed_offsets(
            consumer, [KafkaTopicPartition(tp.topic, tp.partition) for tp in ranges], timeout
        )
    except KafkaException as exc:
        raise BrokerError(f"cannot read the replay group's offsets: {error_text(exc)}") from None
    out = dict(ranges)
    for kafka_tp in committed:
        tp = TopicPartition(kafka_tp.topic, kafka_tp.partition)
        if own is not None and kafka_tp.offset >= 0 and tp not in own:
            raise ConfigError(
                "--group",
                f"the group has committed offsets on {tp.topic} that no replay made: "
                "it is some pipeline's group, and the replay's commits would overwrite them",
            )
        start, end = ranges[tp]
        if start < kafka_tp.offset <= end:
            out[tp] = (kafka_tp.offset, end)
    return out


@dataclass
class ReplayResult:
    """What a replay did."""

    ranges: dict[TopicPartition, tuple[int, int]]
    positions: dict[TopicPartition, int]
    dead_lettered: int
    seconds: float
    exit_code: int

    @property
    def processed(self) -> int:
        """Records processed by this run."""
        return sum(self.positions[tp] - start for tp, (start, _) in self.ranges.items())

    @property
    def complete(self) -> bool:
        """Whether every partition reached its end offset."""
        return all(self.positions[tp] >= end for tp, (_, end) in self.ranges.items())


def outputs(app: App, agent: Agent) -> dict[str, Topic]:
    """The topics a replay of ``agent`` writes to, by name: its outputs, then its dead letters.

    Never the live retry tiers, which the live group reads: the worker gives
    bounded runs no tiers, so tier-eligible failures are dead-lettered after
    the in-place attempts.
    """
    dlq = app.dead_letter_topic(agent)
    targets = {t.name: t for t in app.emit_targets(agent)}
    return {**targets, **({dlq.name: dlq} if dlq else {})}


def check_redirect(agent: Agent, writable: dict[str, Topic], redirect: dict[str, str]) -> None:
    """Refuse a ``--redirect SRC=DST`` whose SRC the agent never writes to.

    Raises:
        ConfigError: SRC is not in ``writable`` (see :func:`outputs`).
    """
    unknown = set(redirect) - set(writable)
    if unknown:
        raise ConfigError(
            "--redirect",
            f"agent {agent.name} does not write to {sorted(unknown)[0]} "
            f"(its outputs and dead-letter topic: {', '.join(sorted(writable))})",
        )


def live_outputs(app: App, agent: Agent, redirect: dict[str, str]) -> list[str]:
    """The agent's output topics that ``redirect`` leaves in place: a replay emits to them live.

    Its dead-letter topic is not counted: dead letters reach a pipeline only
    through ``dlq redrive``, which asks first.
    """
    return sorted(t.name for t in app.emit_targets(agent) if t.name not in redirect)


def exit_code(worker_code: int, complete: bool) -> int:
    """The replay's exit code: the worker's failure, else :data:`INTERRUPTED` when unfinished.

    A signal stops the worker cleanly (code 0) whether or not the range is
    done; only a finished range may report success.
    """
    if worker_code != 0:
        return worker_code
    return 0 if complete else INTERRUPTED


def run_replay(
    app: App,
    agent_name: str,
    ranges: dict[TopicPartition, tuple[int, int]],
    group: str,
    redirect: dict[str, str],
    rate: float | None = None,
    on_progress: Callable[[dict[TopicPartition, int]], None] | None = None,
    **overrides: Any,
) -> ReplayResult:
    """Run the agent over ``ranges`` in ``group`` until done or interrupted.

    SIGTERM and SIGINT commit what finished; the result's ``exit_code`` is
    then :data:`INTERRUPTED` (3), and 0 only when every partition reached its end.

    ``rate`` caps records per second and must be above 0; ``None`` is no cap.
    """
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ConfigError("rate=", f"must be records per second above 0; got {rate!r}")
    from streamkit.backends.kafka import create_admin, ensure_topics
    from streamkit.logs import configure_logging
    from streamkit.runtime.bounds import Bounds
    from streamkit.runtime.worker import Worker

    [agent] = app.select([agent_name])
    config = app.config(group_id=group, **overrides)
    configure_logging(config.log_format, config.log_level)
    writable = outputs(app, agent)
    check_redirect(agent, writable, redirect)
    shadows = [_renamed(writable[src], dst) for src, dst in redirect.items()]
    wanted = [*(t for n, t in writable.items() if n not in redirect), *shadows]
    ensure_topics(create_admin(config), wanted, replication=config.replication)
    positions = {tp: start for tp, (start, _) in ranges.items()}

    def progress(done: dict[TopicPartition, int]) -> None:
        positions.update(done)
        if on_progress is not None:
            on_progress(done)

    bounds = Bounds(ranges=ranges, redirect=redirect, rate=rate, on_progress=progress)
    worker = Worker(app, [agent], config, bounds=bounds)
    started = time.monotonic()
    code = asyncio.run(worker.run())
    recovery = worker.recoveries.get(agent.source.name)
    for tp, w in worker.workers.items():
        if w.offsets.position is not None:
            positions[tp] = max(positions[tp], min(w.offsets.position, ranges[tp][1]))
    complete = all(positions[tp] >= end for tp, (_, end) in ranges.items())
    return ReplayResult(
        ranges=ranges,
        positions=positions,
        dead_lettered=recovery.dead_lettered if recovery else 0,
        seconds=time.monotonic() - started,
        exit_code=exit_code(code, complete),
    )


def _renamed(topic: Any, name: str) -> Any:
    from dataclasses import replace

    return replace(topic, name=name)
