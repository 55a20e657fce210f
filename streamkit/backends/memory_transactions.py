"""The in-memory broker's transaction coordinator: epochs, fencing, open transactions.

:class:`~streamkit.backends.memory_broker.MemoryBroker` delegates the
transaction state here, so its own module keeps to logs and groups; this
module knows neither, and the broker hands it what it needs under its lock.

What it models, because exactly once depends on it:

* **Epochs and fencing.** A ``transactional.id`` has an epoch; a newer
  ``init_transactions`` (or ``MemoryBroker.fence``) aborts the open
  transaction of the older epoch and refuses that epoch from then on.
* **Visibility.** A transaction's records take offsets when appended but
  stay invisible to ``read_committed`` members until it commits: their fetch
  stops at the first record of an open transaction (the last stable offset)
  and skips aborted records.
* **Staged offsets.** Offsets a transaction stages for a group are applied
  only when it commits. The broker checks them against the member that sent
  them (KIP-447 zombie fencing), and does not assign a ``read_committed``
  member a partition while an open transaction holds offsets for it, as
  Kafka's consumer waits for stable offsets.

What it does not model: commit or abort markers (offsets stay contiguous,
where Kafka gives each marker an offset), and ``transaction.timeout.ms`` (a
transaction stays open until it is committed, aborted or fenced, or its
producer crashes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from streamkit.types import TopicPartition

OPEN, COMMITTED, ABORTED = "open", "committed", "aborted"


@dataclass(eq=False)
class Transaction:
    """One transaction of a transactional producer; changed under the broker's lock.

    Attributes:
        transactional_id: The producer's ``transactional.id``.
        epoch: The producer epoch that began it; a newer epoch aborts it.
        state: ``open``, ``committed`` or ``aborted``.
        first: The offset of its first record in each partition it wrote
            to: while it is open, the lowest of these bounds what
            ``read_committed`` members may fetch there.
        offsets: Offsets staged per consumer group, applied when it commits.
    """

    transactional_id: str
    epoch: int
    state: str = OPEN
    first: dict[TopicPartition, int] = field(default_factory=dict)
    offsets: dict[str, dict[TopicPartition, int]] = field(default_factory=dict)


class ProducerFencedError(Exception):
    """A call from a producer epoch that a newer ``init_transactions`` replaced."""

    def __init__(self, transactional_id: str, epoch: int) -> None:
        self.transactional_id = transactional_id
        self.epoch = epoch
        super().__init__(f"transactional.id {transactional_id}: epoch {epoch} is fenced")


class TransactionStateError(Exception):
    """A transactional call the transaction's state does not allow (it already ended)."""


class TransactionCoordinator:
    """Every ``transactional.id``'s epoch and open transaction, for one broker.

    Not thread-safe by itself: the broker calls every method with its lock
    held, which also guards the :class:`Transaction` objects handed out.

    Args:
        changed: Called (lock held) when a transaction ends: ``read_committed``
            members may fetch past it, and test drivers may see progress.
    """

    def __init__(self, changed: Callable[[], None]) -> None:
        self._changed = changed
        self._epochs: dict[str, int] = {}  # transactional.id -> current epoch
        self._open: dict[str, Transaction] = {}  # transactional.id -> its open transaction
        # Partitions that ever held a transactional record: only their fetches
        # look at each record; every other log is served by slicing, as before.
        self._transactional: set[TopicPartition] = set()

    def init_transactions(self, transactional_id: str) -> int:
        """Register a producer for ``transactional_id``; returns its new epoch.

        The previous epoch's open transaction is aborted and that epoch is
        fenced: each of its later calls raises :class:`ProducerFencedError`.
        """
        self.abort(self._open.get(transactional_id))
        epoch = self._epochs.get(transactional_id, -1) + 1
        self._epochs[transactional_id] = epoch
        return epoch

    def begin(self, transactional_id: str, epoch: int) -> Transaction:
        """Open a transaction for the producer at ``epoch``.

        Raises:
            ProducerFencedError: ``epoch`` is not the id's current one.
            TransactionStateError: The id already has an open transaction.
        """
        self.check_epoch(transactional_id, epoch)
        if transactional_id in self._open:
            raise TransactionStateError(f"{transactional_id}: a transaction is open")
        txn = self._open[transactional_id] = Transaction(transactional_id, epoch)
        return txn

    def appended(self, transaction: Transaction, tp: TopicPartition, offset: int) -> None:
        """``transaction`` appended a record at ``offset`` of ``tp``."""
        transaction.first.setdefault(tp, offset)
        self._transactional.add(tp)

    def end(self, transaction: Transaction, state: str) -> None:
        """Close the open ``transaction`` as ``committed`` or ``aborted``.

        The caller applies a commit's staged offsets first, so records and
        offsets become visible together.
        """
        transaction.state = state
        del self._open[transaction.transactional_id]
        self._changed()

    def abort(self, transaction: Transaction | None) -> None:
        """Abort ``transaction`` (checked open by the caller); ``None`` does nothing."""
        if transaction is not None:
            self.end(transaction, ABORTED)

    def abandon(self, transaction: Transaction) -> None:
        """Abort ``transaction`` if it is still open: its producer died."""
        if self._open.get(transaction.transactional_id) is transaction:
            self.abort(transaction)

    def check_epoch(self, transactional_id: str, epoch: int) -> None:
        """Raise :class:`ProducerFencedError` unless ``epoch`` is the id's current one."""
        if self._epochs.get(transactional_id) != epoch:
            raise ProducerFencedError(transactional_id, epoch)

    def check_open(self, transaction: Transaction) -> None:
        """Raise unless ``transaction``'s epoch is current and it is still open.

        Raises:
            ProducerFencedError: The transaction's epoch was fenced.
            TransactionStateError: The transaction already ended.
        """
        self.check_epoch(transaction.transactional_id, transaction.epoch)
        if transaction.state != OPEN:
            raise TransactionStateError(f"the transaction is {transaction.state}")

    def stable_offset(self, tp: TopicPartition, end: int) -> int:
        """The last stable offset: the first record of an open transaction, else ``end``."""
        firsts = [t.first[tp] for t in self._open.values() if tp in t.first]
        return min(firsts) if firsts else end

    def touched(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` ever held a transactional record (so may hold aborted ones)."""
        return tp in self._transactional

    def holding(self, group: str, tp: TopicPartition) -> list[Transaction]:
        """The open transactions that staged offsets for ``group`` on ``tp``."""
        return [t for t in self._open.values() if tp in t.offsets.get(group, ())]
