"""Re-keying: an agent that reads its source grouped by another key.

Tables, windows and joins are per key *and per partition*: a record must be
in the partition of the key it is counted under. A stream keyed one way
(orders by order id) is aggregated another way (revenue per customer) by
moving each record to the partition of its new key first. ``group_by=`` on
``app.agent`` or ``app.window`` does that through an internal topic,
``<app>.<agent>.repartition``::

    @app.agent(orders, group_by=lambda order: order["customer_id"], tables=[totals])
    def total(order, ctx):  # ctx.key is the customer id
        totals[ctx.key] = totals.get(ctx.key, 0) + order["amount"]

The runtime adds a small agent, ``<agent>.repartition``, that reads the
source and writes each record to the repartition topic under its new key
(value, timestamp and headers unchanged, less streamkit's error and retry
headers of its own failures before the move), with the delivery guarantees of
any agent: its offsets commit after the broker has the re-keyed record, and
exactly once it is one transaction. The declared agent reads the
repartition topic, and its tables and windows are partitioned like it. A
key function that raises dead-letters the record from
``<app>.<agent>.repartition.dlq``, with the source record's bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamkit.errors import DeclarationError
from streamkit.runtime.failures import without_failure_headers
from streamkit.topics import SerdeSpec, Topic

# The suffix of the internal agent and of its topic.
REPARTITION = "repartition"


@dataclass(frozen=True, slots=True)
class GroupBy:
    """How an agent's source is re-keyed before the agent reads it.

    Attributes:
        key: ``value -> new key``, called once per record.
        key_serde: How the new key is encoded (``str`` by default, so a key
            reads back as typed in ``streamkit tables get``).
        partitions: The repartition topic's partition count (default: the source's).
    """

    key: Callable[[Any], Any]
    key_serde: SerdeSpec = "str"
    partitions: int | None = None

    @staticmethod
    def of(spec: Callable[[Any], Any] | GroupBy, owner: str) -> GroupBy:
        """A ``group_by=`` argument as a :class:`GroupBy`: a bare function is its key."""
        if isinstance(spec, GroupBy):
            return spec
        if not callable(spec):
            raise DeclarationError(
                f"agent {owner}: group_by must be a function of the value or a GroupBy, "
                f"not {spec!r}"
            )
        return GroupBy(spec)

    def topic(self, app_name: str, owner: str, source: Topic) -> Topic:
        """``<app>.<owner>.repartition``: the source's values under the new key."""
        return Topic(
            f"{app_name}.{owner}.{REPARTITION}",
            key_serde=self.key_serde,
            value_serde=source.value_serde,
            partitions=self.partitions or source.partitions,
        )

    def agent_fn(self, topic: Topic) -> Callable[[Any, Any], None]:
        """The internal agent's function: the record again, under its new key."""
        key_of = self.key

        def repartition(value: Any, ctx: Any) -> None:
            # A record without a timestamp (-1, rare) gets the producer's.
            stamp = ctx.timestamp if ctx.timestamp > 0 else None
            # Without the retry headers of this agent's own tiers (a record
            # that failed here first): the declared agent would take them for
            # its own, skip its first tier and count the wrong attempts. Most
            # records have no headers: they skip the call (about 200 ns).
            headers = ctx.headers
            if headers:
                headers = without_failure_headers(headers)
            ctx.emit(topic, value, key=key_of(value), headers=headers, timestamp=stamp)

        return repartition
