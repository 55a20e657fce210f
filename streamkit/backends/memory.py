"""The in-memory backend: clients with confluent-kafka's methods over a :class:`MemoryBroker`.

The runtime cannot tell these clients from librdkafka's: the same
``consume``/``commit``/``pause``/``resume``/``assignment``/``close`` on the
consumer, with ``on_assign``/``on_revoke``/``on_lost`` fired from inside
``consume()`` on the calling thread, and commit results handed to
``on_commit`` at the next ``consume()``; the same ``produce``/``poll``/
``flush`` on the producer, with delivery reports served by ``poll()`` and
``flush()`` on the calling thread. So agents run through the real worker,
commit logic and rebalance handlers, only faster and without a broker.

A producer with ``transactional.id`` in its configuration has the
transactional API too (``init_transactions``, ``begin_transaction``,
``send_offsets_to_transaction``, ``commit_transaction``,
``abort_transaction``), and consumers honour ``isolation.level``
(``read_committed`` by default, as in librdkafka), with
``consumer_group_metadata()`` and ``seek()``. The producer's transactional
API is in :mod:`~streamkit.backends.memory_producer_transactions`, the
broker's transaction state in :mod:`~streamkit.backends.memory_transactions`;
the differences from Kafka they make are listed here, with the others.

These differences are deliberate:

* ``consume()`` returns as soon as records are there and wakes on new ones,
  instead of librdkafka's fetch batching; so there is no prefetch queue, and
  ``seek()`` has no fetched-but-unreturned records to drop.
* The producer never raises ``BufferError``: its queue has no bound, since an
  acknowledgement is only ever one ``poll()`` away.
* ``crash()`` on a transactional producer aborts its open transaction at
  once. Kafka aborts it only when ``transaction.timeout.ms`` passes or a
  producer with the same ``transactional.id`` calls ``init_transactions``;
  tests of crashes then need no timeout, but they cannot observe a dead
  producer's transaction holding ``read_committed`` readers back.
* No transaction times out: one left open holds ``read_committed`` readers
  back until it is committed, aborted, fenced or its producer crashes.
* Fencing is found at every transactional call, ``begin_transaction``
  included (librdkafka learns it at its next request to the broker); it is
  fatal, and every later call raises ``_FENCED``.
* A record of a transaction fails delivery at once (an unknown topic or
  partition; librdkafka waits ``message.timeout.ms``). Later ``produce()``
  calls are still accepted, and ``commit_transaction`` refuses with
  ``txn_requires_abort``.
* Transactions write no commit or abort markers, so offsets stay contiguous:
  on Kafka each marker takes an offset in every partition it closes.

Example::

    broker = MemoryBroker()
    broker.create_topic("orders", partitions=4)
    worker = Worker(app, app.select(), config, backend=MemoryBackend(broker))
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import OFFSET_INVALID, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streamkit.backends.memory_broker import MemoryBroker
from streamkit.backends.memory_groups import GroupMetadata, Member, MemberError
from streamkit.backends.memory_producer_transactions import TransactionalProducerMixin
from streamkit.backends.memory_records import MemoryMessage, UnknownTopicError
from streamkit.backends.memory_transactions import ProducerFencedError, TransactionStateError
from streamkit.config import AppConfig
from streamkit.types import Headers, TopicPartition

RebalanceCallback = Callable[[Any, list[KafkaTopicPartition]], None]
CommitCallback = Callable[[KafkaError | None, list[KafkaTopicPartition]], None]
DeliveryCallback = Callable[[KafkaError | None, MemoryMessage], None]

__all__ = ["MemoryBackend", "MemoryBroker", "MemoryConsumer", "MemoryMessage", "MemoryProducer"]


def _kafka_tps(tps: Sequence[TopicPartition]) -> list[KafkaTopicPartition]:
    return [KafkaTopicPartition(tp.topic, tp.partition) for tp in tps]


def _as_bytes(data: str | bytes | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


def _headers(raw: Mapping[str, Any] | Sequence[tuple[str, Any]] | None) -> Headers | None:
    if not raw:
        return None
    pairs = raw.items() if isinstance(raw, Mapping) else raw
    return [(str(name), _as_bytes(value)) for name, value in pairs]  # type: ignore[misc]


_ISOLATION_LEVELS = ("read_committed", "read_uncommitted")


class MemoryConsumer:
    """A group consumer on the in-memory broker.

    Args:
        broker: The broker.
        group: Consumer group id.
        reset: ``earliest`` or ``latest`` for partitions without a committed offset.
        on_commit: ``on_commit(err, partitions)`` after every commit, served by ``consume()``.
        **librdkafka: Other librdkafka settings, dotted keys as in its
            configuration. ``isolation.level`` is honoured; callbacks
            (``error_cb``...) and the rest are accepted and never used, since
            the memory broker has no connection to lose.

    Raises:
        ValueError: ``isolation.level`` is neither ``read_committed`` nor
            ``read_uncommitted`` (librdkafka refuses it at construction too).
    """

    def __init__(
        self,
        broker: MemoryBroker,
        group: str,
        reset: str = "earliest",
        on_commit: CommitCallback | None = None,
        **librdkafka: Any,
    ) -> None:
        isolation = str(librdkafka.get("isolation.level", "read_committed"))
        if isolation not in _ISOLATION_LEVELS:
            raise ValueError(f"isolation.level must be one of {_ISOLATION_LEVELS}: {isolation!r}")
        self._broker = broker
        self._group = group
        self._reset = reset
        self._isolation = isolation
        self._on_commit = on_commit
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._on_lost: RebalanceCallback | None = None
        self._member: Member | None = None
        self._commit_results: list[tuple[KafkaError | None, list[KafkaTopicPartition]]] = []
        self._woken = False
        self._closed = False

    @property
    def member(self) -> Member | None:
        """This consumer's group membership (``None`` before ``subscribe``)."""
        return self._member

    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        """Join the group; partitions arrive through ``on_assign`` inside ``consume()``."""
        self._check_open()
        if self._member is not None:
            raise RuntimeError("MemoryConsumer: subscribe() once per consumer")
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self._member = self._broker.join(self._group, topics, self._reset, self._isolation)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[MemoryMessage]:
        """Serve rebalance and commit callbacks, then return up to ``num_messages`` records.

        Returns at once when records are there; otherwise waits up to
        ``timeout`` seconds (forever if negative) for records, a rebalance,
        or :meth:`wake_consume`.
        """
        self._check_open()
        broker = self._broker
        deadline = None if timeout < 0 else time.monotonic() + timeout
        with broker.data:
            member = self._member
            if member is not None:
                member.in_hand = 0
            while True:
                if member is not None and member.state in ("active", "expired"):
                    broker.rejoin_if_expired(member)
                    lost, revoke, assign = broker.next_step(member)
                    results, self._commit_results = self._commit_results, []
                    if lost or revoke or assign or results:
                        broker.data.release()
                        try:
                            self._fire(member, results, lost, revoke, assign)
                        finally:
                            broker.data.acquire()
                        continue
                    msgs = broker.fetch(member, num_messages)
                    if msgs:
                        member.in_hand = len(msgs)
                        return msgs
                if self._woken:
                    self._woken = False
                    return []
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                broker.data.wait(remaining)

    def _fire(
        self,
        member: Member,
        results: list[tuple[KafkaError | None, list[KafkaTopicPartition]]],
        lost: list[TopicPartition],
        revoke: list[TopicPartition],
        assign: list[TopicPartition],
    ) -> None:
        # Called without the broker lock: the runtime's handlers wait for the
        # event loop and commit from inside them.
        if self._on_commit is not None:
            for err, partitions in results:
                self._on_commit(err, partitions)
        if lost:
            # librdkafka falls back to on_revoke when no on_lost is set.
            handler = self._on_lost or self._on_revoke
            if handler is not None:
                handler(self, _kafka_tps(lost))
        if revoke:
            try:
                if self._on_revoke is not None:
                    self._on_revoke(self, _kafka_tps(revoke))
            finally:
                self._broker.revoked(member, revoke)
        if assign and self._on_assign is not None:
            self._on_assign(self, _kafka_tps(assign))

    def memberid(self) -> str | None:
        """The group member id, as confluent-kafka's ``memberid()`` (``None`` before joining)."""
        member = self._member
        return member.id if member is not None and member.state == "active" else None

    def poll(self, timeout: float = -1) -> MemoryMessage | None:
        """One record, or ``None`` after ``timeout``."""
        msgs = self.consume(1, timeout)
        return msgs[0] if msgs else None

    def wake_consume(self) -> None:
        """Make a waiting ``consume()`` return now (any thread): the fetcher has a command."""
        with self._broker.data:
            self._woken = True
            self._broker.data.notify_all()

    def commit(
        self,
        message: MemoryMessage | None = None,
        offsets: list[KafkaTopicPartition] | None = None,
        asynchronous: bool = True,
    ) -> list[KafkaTopicPartition] | None:
        """Commit offsets for the group, synchronously or not, as confluent-kafka does.

        The result also goes to ``on_commit`` at the next ``consume()``.

        Returns:
            The committed partitions for a synchronous commit; ``None`` otherwise.

        Raises:
            KafkaException: A synchronous commit failed (for example the member
                was fenced); an asynchronous one reports it to ``on_commit``.
        """
        self._check_open()
        if offsets is None:
            if message is None:
                raise KafkaException(KafkaError(KafkaError._NO_OFFSET, "no offsets to commit"))
            offsets = [
                KafkaTopicPartition(message.topic(), message.partition(), message.offset() + 1)
            ]
        result = [KafkaTopicPartition(tp.topic, tp.partition, tp.offset) for tp in offsets]
        err: KafkaError | None = None
        try:
            if self._member is None:
                raise MemberError("(not subscribed)", "unknown")
            pairs = [(TopicPartition(tp.topic, tp.partition), tp.offset) for tp in offsets]
            self._broker.commit(self._member, pairs)
        except MemberError as exc:
            err = KafkaError(KafkaError.UNKNOWN_MEMBER_ID, str(exc))
        except UnknownTopicError as exc:
            err = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"cannot commit {exc}")
        if self._on_commit is not None:
            with self._broker.data:
                self._commit_results.append((err, result))
        if asynchronous:
            return None
        if err is not None:
            raise KafkaException(err)
        return result

    def committed(
        self, partitions: list[KafkaTopicPartition], timeout: float = -1
    ) -> list[KafkaTopicPartition]:
        """The group's committed offsets (``OFFSET_INVALID`` where there is none)."""
        found = self._broker.committed(self._group)
        return [
            KafkaTopicPartition(
                tp.topic,
                tp.partition,
                found.get(TopicPartition(tp.topic, tp.partition), OFFSET_INVALID),
            )
            for tp in partitions
        ]

    def position(self, partitions: list[KafkaTopicPartition]) -> list[KafkaTopicPartition]:
        """The next offset each partition will be fetched from (``OFFSET_INVALID`` if not owned)."""
        member = self.member
        owned = {} if member is None else dict(member.owned)
        return [
            KafkaTopicPartition(
                tp.topic,
                tp.partition,
                owned.get(TopicPartition(tp.topic, tp.partition), OFFSET_INVALID),
            )
            for tp in partitions
        ]

    def consumer_group_metadata(self) -> GroupMetadata:
        """The group and this member, for ``send_offsets_to_transaction``.

        Taken anew for each transaction: after a rejoin, the metadata from
        before it names a stale generation and the producer refuses it.
        """
        self._check_open()
        with self._broker.data:
            member = self._member
            return GroupMetadata(self._group, member, member.generation if member else -1)

    def seek(self, partition: KafkaTopicPartition) -> None:
        """Fetch ``partition`` from ``partition.offset`` on (logical offsets too).

        Raises:
            KafkaException: ``_STATE`` if this consumer is not assigned the
                partition, ``_INVALID_ARG`` for a negative non-logical offset.
        """
        self._check_open()
        tp = TopicPartition(partition.topic, partition.partition)
        with self._broker.data:
            member = self._member
            try:
                if member is None:
                    raise KeyError(tp)
                self._broker.seek(member, tp, partition.offset)
            except KeyError:
                raise KafkaException(
                    KafkaError(KafkaError._STATE, f"seek: {tp} is not assigned to this consumer")
                ) from None
            except ValueError as exc:
                raise KafkaException(KafkaError(KafkaError._INVALID_ARG, str(exc))) from None

    def pause(self, partitions: list[KafkaTopicPartition]) -> None:
        """Stop returning records of these partitions (positions are kept)."""
        self._set_paused(partitions, paused=True)

    def resume(self, partitions: list[KafkaTopicPartition]) -> None:
        """Return records of these partitions again."""
        self._set_paused(partitions, paused=False)

    def _set_paused(self, partitions: list[KafkaTopicPartition], paused: bool) -> None:
        self._check_open()
        with self._broker.data:
            member = self._member
            if member is None:
                return
            for p in partitions:
                tp = TopicPartition(p.topic, p.partition)
                if tp not in member.owned:
                    continue
                if paused:
                    member.paused.add(tp)
                else:
                    member.paused.discard(tp)
            self._broker.data.notify_all()

    def assignment(self) -> list[KafkaTopicPartition]:
        """The partitions this consumer owns now."""
        self._check_open()
        with self._broker.data:
            owned = sorted(self._member.owned) if self._member is not None else []
        return _kafka_tps(owned)

    def close(self) -> None:
        """Revoke every partition (``on_revoke``), then leave the group; idempotent."""
        if self._closed:
            return
        member = self._member
        try:
            if member is not None and member.state == "active":
                with self._broker.data:
                    owned = sorted(member.owned)
                    results, self._commit_results = self._commit_results, []
                self._fire(member, results, [], owned, [])
                self._broker.leave(member)
        finally:
            self._closed = True

    def crash(self) -> None:
        """Simulate the process dying: leave at once, revoking and committing nothing."""
        member = self._member
        if member is not None and member.state in ("active", "expired"):
            self._broker.leave(member, crashed=True)
        self.wake_consume()

    def expire(self) -> None:
        """Simulate a session timeout: the partitions go to others; ``on_lost`` fires here."""
        if self._member is not None:
            self._broker.expire(self._member)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("Consumer closed")


class MemoryProducer(TransactionalProducerMixin):
    """A producer on the in-memory broker; records are appended when produced.

    With ``transactional.id`` set it is transactional, as librdkafka's is:
    ``init_transactions()`` once, then each ``produce()`` inside
    ``begin_transaction()`` and ``commit_transaction()`` or
    ``abort_transaction()`` (from :class:`TransactionalProducerMixin`).

    Example::

        producer = MemoryProducer(broker, **{"transactional.id": "orders-0"})
        producer.init_transactions()
        producer.begin_transaction()
        producer.produce("out", value=b"v")
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata())
        producer.commit_transaction()

    Args:
        broker: The broker.
        **librdkafka: librdkafka settings, dotted keys as in its configuration.
            ``transactional.id`` is honoured; callbacks (``error_cb``...) and
            the rest are accepted and never used.
    """

    def __init__(self, broker: MemoryBroker, **librdkafka: Any) -> None:
        self._broker = broker
        # Reports wait here until poll()/flush(): deque appends and pops are
        # atomic, so produce and poll may run on different threads.
        self._reports: deque[tuple[DeliveryCallback, KafkaError | None, MemoryMessage]] = deque()
        self._crashed = False
        self.produced = 0
        super().__init__(librdkafka.get("transactional.id") or None)

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        callback: DeliveryCallback | None = None,
        on_delivery: DeliveryCallback | None = None,
        timestamp: int = 0,
        headers: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    ) -> None:
        """Append one record; its delivery report waits for ``poll()`` or ``flush()``.

        The parameters are confluent-kafka's, in its positional order
        (``callback`` and ``on_delivery`` are aliases).

        An unknown topic or partition is reported as a delivery error, as
        librdkafka does, not raised.

        Raises:
            KafkaException: On a transactional producer: ``_STATE`` outside a
                transaction, fatal ``_FENCED`` once a newer producer took its
                ``transactional.id``.
        """
        if self._crashed:
            return  # a dead process's records never reach the broker
        txn = self._current_transaction() if self._transactional_id is not None else None
        raw_key, raw_value, raw_headers = _as_bytes(key), _as_bytes(value), _headers(headers)
        err: KafkaError | None = None
        try:
            msg = self._broker.append(
                topic, raw_key, raw_value, raw_headers, partition, timestamp or None, txn
            )
            self.produced += 1
        except (ProducerFencedError, TransactionStateError) as exc:
            if self._crashed:
                return  # crash() on another thread aborted the transaction meanwhile
            raise self._refused(exc) from None
        except UnknownTopicError:
            err = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {topic}")
        except IndexError as exc:
            err = KafkaError(KafkaError._UNKNOWN_PARTITION, str(exc))
        if err is not None:
            msg = MemoryMessage(topic, partition, -1, raw_key, raw_value, raw_headers, 0, err)
            if txn is not None and self._txn_error is None:
                self._txn_error = KafkaError(
                    err.code(), f"a record failed delivery: {err.str()}", txn_requires_abort=True
                )
        report = on_delivery or callback
        if report is not None:
            self._reports.append((report, err, msg))

    def poll(self, timeout: float | None = None) -> int:
        """Serve the waiting delivery reports; returns how many.

        Never waits: every report is ready as soon as its record is appended.
        Each call also tells test drivers that the caller made progress (the
        runtime polls after every slice of work).
        """
        served = self._serve()
        self._broker.poke()
        return served

    def flush(self, timeout: float | None = None) -> int:
        """Serve every delivery report; returns the records still queued (always 0)."""
        self.poll()
        return 0

    def _serve(self) -> int:
        reports, served = self._reports, 0
        while reports:
            try:
                callback, err, msg = reports.popleft()
            except IndexError:
                break
            served += 1
            callback(err, msg)
        return served

    def __len__(self) -> int:
        return len(self._reports)

    def crash(self) -> None:
        """Simulate the process dying: nothing more is appended or acknowledged.

        Its open transaction is aborted at once (Kafka waits for
        ``transaction.timeout.ms``); every later call does nothing.
        """
        self._crashed = True
        self._reports.clear()
        txn, self._txn = self._txn, None
        if txn is not None:
            self._broker.abandon(txn)


class MemoryBackend:
    """The in-memory backend: every client it builds shares one broker.

    Args:
        broker: The broker (a new one by default).
    """

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()

    def consumer(self, config: AppConfig, **callbacks: Any) -> MemoryConsumer:
        """A consumer in ``config.group_id``, starting where ``auto_offset_reset`` says.

        It gets the librdkafka configuration a real consumer would, with
        ``callbacks`` on top (as the Kafka backend merges them), so settings
        such as ``isolation.level`` mean the same on both backends.
        """
        conf = {**config.librdkafka("consumer"), **callbacks}
        return MemoryConsumer(self.broker, config.group_id, config.auto_offset_reset, **conf)

    def producer(self, config: AppConfig, **callbacks: Any) -> MemoryProducer:
        """A producer on the shared broker, transactional if the configuration says so.

        ``callbacks`` go on top of the librdkafka configuration, as in the
        Kafka backend, so a ``transactional.id`` from either makes it
        transactional on both backends alike.
        """
        return MemoryProducer(self.broker, **{**config.librdkafka("producer"), **callbacks})

    def reader(self, config: AppConfig) -> Any:
        """A changelog reader straight from the broker's logs (table restores)."""
        from streamkit.backends.memory_reader import MemoryChangelogReader

        return MemoryChangelogReader(self.broker, config.group_id, config.exactly_once)
