"""Delayed dispatch: records that reach an agent at a time given when they were sent.

``await client.send("send_reminder", value, delay=3600)`` (or ``eta=`` a
datetime) does not hold the record anywhere but Kafka. An agent declared
with ``delays=True`` gets a ladder of delay topics,
``<app>.<agent>.delay.<D>s`` for each ``D`` of :data:`DEFAULT_DELAYS`. A
delayed record goes to the longest tier not longer than its remaining
delay, where it waits ``D`` (every record of a tier waits the same, so a
tier is in due order and only its head needs watching: the same mechanism
as the delayed-retry tiers). When a tier's head is due and the record's
``eta`` still lies ahead, it moves down to the tier for what remains;
once its ``eta`` has come, the agent runs it.

So a record runs once at or after its ``eta``, about a second late at most
when the worker keeps up, and the moves between tiers are ordinary outputs
of their records: committed with their offsets, in one transaction exactly
once. A delayed task therefore runs once across rebalances and restarts
exactly once; at least once, a worker killed between a move and its commit
makes the move twice, and the record runs twice (a graceful rebalance or
restart drains and commits first, so it does not).
"""

from __future__ import annotations

from collections.abc import Sequence

from streamkit.errors import DeclarationError
from streamkit.topics import Topic

# Seconds each tier holds its records. Each step is at most 10x the last,
# so a record hops a few times at most, and waiting in the 1 s tier bounds
# how late it runs (a record due in less than a second waits that long).
DEFAULT_DELAYS = (1, 10, 60, 600, 3600)
H_ETA = "streamkit-eta"


def delay_tiers(spec: bool | Sequence[int], agent: str) -> tuple[int, ...]:
    """The tier delays of ``delays=`` (``True``: :data:`DEFAULT_DELAYS`; ``False``: none)."""
    if spec is False:
        return ()
    if spec is True:
        return DEFAULT_DELAYS
    tiers = tuple(sorted(spec))
    if (
        not tiers
        or any(not isinstance(d, int) or d < 1 for d in tiers)
        or len(set(tiers)) < len(tiers)
    ):
        raise DeclarationError(
            f"agent {agent}: delays must be True or distinct whole seconds >= 1, got {spec!r}"
        )
    return tiers


def delay_topic(app_name: str, agent: str, delay_s: int, partitions: int | None) -> Topic:
    """``<app>.<agent>.delay.<D>s``: raw bytes, partitioned like the agent's source."""
    return Topic(
        f"{app_name}.{agent}.delay.{delay_s}s",
        key_serde="bytes",
        value_serde="bytes",
        partitions=partitions,
    )


def tier_for(tiers: Sequence[int], remaining_ms: int) -> int:
    """The index of the longest tier not longer than ``remaining_ms`` (the shortest if none is)."""
    chosen = 0
    for i, delay in enumerate(tiers):
        if delay * 1000 <= remaining_ms:
            chosen = i
    return chosen
