"""Delay tiers in the worker: a tier's due head either moves down the ladder or runs.

The partition worker already waits for a tier's head (as for retry tiers:
header ``streamkit.retry.due_ts``); :func:`hopping` wraps the agent's
processor for its delay topics so that a record whose ``eta`` is still
ahead is produced to the tier for what remains, for its ticket, instead of
being run (see :mod:`streamkit.delays`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from streamkit.clock import Clock
from streamkit.delays import H_ETA, tier_for
from streamkit.runtime.failures import Settle, move_to_tier
from streamkit.runtime.offsets import Ticket
from streamkit.runtime.processor import Processor

# A record due within this is run now: waiting less than a poll round
# would only add a move.
_EARLY_MS = 200


class Hops:
    """Moves not-yet-due records of an agent's delay tiers to the tier they need next.

    Args:
        tiers: The tier delays in seconds, shortest first.
        topics: The tier topic names, in the same order.
        send: The agent's settling sender (held for the transaction exactly once).
        clock: The worker's clock (the harness's manual one in tests).
    """

    def __init__(
        self, tiers: tuple[int, ...], topics: tuple[str, ...], send: Settle, clock: Clock
    ) -> None:
        self._tiers = tiers
        self._topics = topics
        self._send = send
        self._clock = clock
        self.moved = 0

    def hop(self, msg: Any, ticket: Ticket) -> bool:
        """Move ``msg`` on if its ``eta`` is ahead (``True``); ``False``: run it now."""
        headers = msg.headers() or []
        eta = next((int(v) for k, v in headers if k == H_ETA and v), 0)
        now = int(self._clock.time() * 1000)
        remaining = eta - now
        if remaining <= _EARLY_MS:
            return False
        tier = tier_for(self._tiers, remaining)
        due = now + min(self._tiers[tier] * 1000, remaining)
        move_to_tier(self._send, msg, ticket, self._topics[tier], due, headers)
        self.moved += 1
        return True


def hopping(processor: Processor, hops: Hops) -> Processor:
    """``processor`` for a delay tier: records not due yet move on instead of running."""
    hop = hops.hop
    sync = processor.sync
    if sync is not None:

        def run_sync(msg: Any, ticket: Ticket) -> None:
            if not hop(msg, ticket):
                sync(msg, ticket)

        return replace(processor, sync=run_sync)
    run = processor.run_async
    assert run is not None

    async def run_async(msg: Any, ticket: Ticket) -> None:
        if not hop(msg, ticket):
            await run(msg, ticket)

    return replace(processor, run_async=run_async)
