"""Admin-request plumbing shared by the ops modules: futures to values or BrokerError."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from streamkit.errors import BrokerError

# A group coordinator that just started (a fresh broker, a failover) answers
# "load in progress" for a few hundred milliseconds; asking again is the fix.
_COORDINATOR_BUSY = frozenset(
    {
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }
)
_RETRY_S = 0.2


def error_text(exc: KafkaException) -> str:
    """The readable part of a librdkafka error (its ``str()``, not the repr)."""
    first = exc.args[0] if exc.args else exc
    return first.str() if isinstance(first, KafkaError) else str(first)


def error_code(exc: KafkaException) -> int | None:
    """The librdkafka error code inside ``exc``, if it carries one."""
    first = exc.args[0] if exc.args else None
    return first.code() if isinstance(first, KafkaError) else None


def result(future: Future[Any], what: str, timeout: float) -> Any:
    """Wait for an admin future; a failure becomes ``BrokerError("cannot <what>: ...")``."""
    try:
        return future.result(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot {what}: {error_text(exc)}") from None
    except TimeoutError:
        raise BrokerError(f"cannot {what}: no answer within {timeout:.0f}s") from None


def request(
    send: Callable[[], Future[Any]],
    what: str,
    timeout: float,
    *,
    absent: frozenset[int] = frozenset(),
) -> Any:
    """Send a group request and wait for it, asking again while the coordinator is busy.

    Args:
        send: Sends the request and returns its future (called once per attempt).
        what: What is being done, for the error message.
        timeout: Seconds for all attempts together.
        absent: Error codes that mean "no such thing": ``None`` is returned.

    Raises:
        BrokerError: The request failed for another reason, or ``timeout`` passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return send().result(timeout=max(0.0, deadline - time.monotonic()))
        except KafkaException as exc:
            if error_code(exc) in absent:
                return None
            if error_code(exc) in _COORDINATOR_BUSY and time.monotonic() + _RETRY_S < deadline:
                time.sleep(_RETRY_S)
                continue
            raise BrokerError(f"cannot {what}: {error_text(exc)}") from None
        except TimeoutError:
            raise BrokerError(f"cannot {what}: no answer within {timeout:.0f}s") from None


def committed_offsets(consumer: Any, tps: list[Any], timeout: float = 30.0) -> list[Any]:
    """``consumer.committed(tps)``, retried while a never-used group's coordinator is found.

    A new group's first offset fetch often answers NOT_COORDINATOR or
    COORDINATOR_LOAD_IN_PROGRESS for a moment; that is not an error to report.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return list(consumer.committed(tps, timeout=10))
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
