"""What "idle" means to the test harness, asked of the running workers.

:meth:`streamkit.testing.TestApp.run_until_idle` loops over these questions
until nothing is pending, or only time is (a commit interval, a retry
backoff, an exactly-once checkpoint), which it then makes pass on its manual
clock. Every function runs on the workers' event-loop thread, between two
steps of the partition workers, so the answers are one consistent snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamkit.backends.memory import MemoryBroker
from streamkit.runtime.worker import Worker
from streamkit.types import TopicPartition


def pending(broker: MemoryBroker, group: str, workers: Sequence[Worker]) -> list[str]:
    """Everything not done yet, one line each: records not fetched, processed or acknowledged."""
    # Topic tables first, outside the lock end_offsets takes: an update
    # produced after this look is caught by the next one.
    behind = [
        f"worker {i}: {line}"
        for i, worker in enumerate(workers)
        if worker.topic_tables is not None
        for line in worker.topic_tables.behind(lambda t, p: broker.end_offsets(t).get(p, 0))
    ]
    # With the broker locked: its state and the runtime's are one snapshot.
    with broker.progress:
        out = broker.caught_up(group) + behind
        for i, worker in enumerate(workers):
            lines = worker.pending()
            lines += [
                f"{p.tp}: idle windows due to close"
                for p in list(worker.workers.values())
                if p.idle_due()
            ]
            if worker.scheduler is not None:
                lines += worker.scheduler.pending()
            out += [f"worker {i}: {line}" for line in lines]
    return out


def waiting_until(workers: Sequence[Worker]) -> float | None:
    """The clock time all unfinished work waits for (retry backoffs, tiers), if that is all."""
    waits = []
    for worker in workers:
        if worker.scheduler is not None and worker.scheduler.pending():
            return None
        if not worker.pending():
            continue
        for partition in list(worker.workers.values()):
            if partition.unfinished() is None:
                continue
            when = partition.waiting_until()
            if when is None:
                return None
            waits.append(when)
    return min(waits, default=None)


def holding(workers: Sequence[Worker]) -> bool:
    """Exactly once: the only thing left is outputs held for the next checkpoint."""
    return all(w.holding() or not w.pending() for w in workers) and any(
        w.holding() for w in workers
    )


def commit_in_flight(workers: Sequence[Worker]) -> bool:
    """A commit (or a checkpoint transaction) was sent and is not answered yet."""
    if any(w.checkpoints is not None and w.checkpoints.running for w in workers):
        return True
    if any(w.state_checkpoints is not None and w.state_checkpoints.running for w in workers):
        return True
    return any(
        p.offsets.sent is not None and p.offsets.sent != p.offsets.committed
        for w in workers
        for p in list(w.workers.values())
    )


def commit_lag(broker: MemoryBroker, group: str, workers: Sequence[Worker]) -> list[str]:
    """Input partitions whose committed offset is not at their end, one line each."""
    committed = broker.committed(group)
    # Every topic the workers subscribe to: the agents' inputs, and any
    # other input the runtime adds for them (retry tiers).
    consumed = sorted({t for w in workers for t in w.processors})
    lag = []
    for topic in consumed:
        for p, end in broker.end_offsets(topic).items():
            position = committed.get(TopicPartition(topic, p), 0)
            if position != end:
                lag.append(f"{topic}[{p}]: committed {position}, end {end}")
    return lag


def tables_restored(workers: Sequence[Worker]) -> bool:
    """Every owned partition of an agent with tables has its slices (restores are done)."""
    return all(
        w.tables is None
        or all(tp in w.tables.slices for tp in w.workers if w.tables.uses(tp.topic))
        for w in workers
    )


def table_contents(workers: Sequence[Worker], name: str) -> dict[Any, Any]:
    """Table ``name`` across every worker and partition, writes not yet checkpointed included."""
    out: dict[Any, Any] = {}
    for worker in workers:
        if worker.tables is None:
            continue
        for parts in list(worker.tables.slices.values()):
            for part in parts:
                if part.name == name:
                    out.update(part.items())
    return out
