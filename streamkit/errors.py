"""Every exception streamkit raises, and the signals agent code may raise.

The hierarchy::

    StreamkitError
    ├── ConfigError (ValueError)          a setting is wrong; names the setting
    ├── DeclarationError (ValueError)     an app, topic or agent declaration is wrong
    ├── SerdeError
    │   ├── DeserializationError          bytes from Kafka could not be decoded
    │   └── SerializationError            a value could not be encoded for a topic
    ├── RecordError                       a record could not be processed (topic, partition, offset)
    │   ├── AgentError                    decoding, the agent, encoding or producing failed;
    │   │                                 ``stage`` says which, ``__cause__`` is the original error
    │   └── DeliveryError                 the broker refused a record produced for it: the cause
    │                                     of a ``produce``-stage AgentError, or raised itself
    │                                     when its dead letter or retry-tier move was refused
    ├── DeadLetterLimitError              too many records dead-lettered: the worker stops
    ├── BrokerError                       the Kafka client reported a fatal error
    │   └── FencedError                   exactly once: a newer producer or member holds this
    │                                     worker's identity; its open transaction was aborted
    ├── StateError                        a table was used where it cannot be: the worker stops
    │   └── StoreCorrupted                a local store's files cannot be read (rebuilt from
    │                                     the changelog, with a warning; never raised to agents)
    ├── LocalKafkaError                   the local development broker could not be fetched or run
    └── ClientError                       app.client() could not send, or was used wrongly
        ├── RemoteError                   the agent asked failed for good on the request: its
        │                                 error's type, message, attempts and dead letter
        └── RequestTimeout (TimeoutError) no answer (or final task status) in time

    AgentSignal                           raised by agent code on purpose, not errors
    ├── SkipRecord                        skip this record (counted, logged, offset committed)
    └── DeadLetter                        send this record straight to the dead-letter topic

Setup errors also subclass the builtin that fits, so ``except ValueError`` in
user code keeps working. Errors about one record carry its coordinates, so an
operator can find it with any Kafka tool.
"""

from __future__ import annotations


class StreamkitError(Exception):
    """Root of every streamkit error."""


class ConfigError(StreamkitError, ValueError):
    """A configuration value is missing or invalid.

    Raised once, at start, before anything connects. ``setting`` names the
    offending setting as the user wrote it (argument or environment variable).
    """

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"invalid setting {setting}: {problem}")


class DeclarationError(StreamkitError, ValueError):
    """An app, topic or agent is declared inconsistently (caught before running)."""


class SerdeError(StreamkitError):
    """Base for encoding and decoding failures."""


class DeserializationError(SerdeError):
    """Bytes read from Kafka could not be decoded with the topic's serde."""


class SerializationError(SerdeError):
    """A value could not be encoded with the target topic's serde."""


class RecordError(StreamkitError):
    """One record failed; carries its coordinates so it can be found again.

    Attributes:
        topic: Source topic of the record.
        partition: Source partition.
        offset: Source offset; it stays uncommitted, so the record is redelivered.
    """

    def __init__(self, topic: str, partition: int, offset: int, problem: str) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.problem = problem
        super().__init__(f"{problem} (topic={topic} partition={partition} offset={offset})")


class AgentError(RecordError):
    """Processing one record failed.

    Attributes:
        stage: ``deserialize``, ``process``, ``serialize`` or ``produce``.
    """

    def __init__(
        self, topic: str, partition: int, offset: int, problem: str, stage: str = "process"
    ) -> None:
        super().__init__(topic, partition, offset, problem)
        self.stage = stage


class DeliveryError(RecordError):
    """The broker did not take a record produced for this input record.

    It appears in two places. As the ``__cause__`` of an :class:`AgentError`
    with stage ``produce``, whether ``produce()`` refused the emit at once or
    its delivery report failed later: ``retriable`` decides whether the
    agent's retries and tiers apply or the record goes straight to the
    dead-letter topic. And raised on its own, stopping the worker, when the
    record meant to settle a failure (its dead letter, or its move to a retry
    tier) was refused: the input offset then stays uncommitted.

    Attributes:
        code: librdkafka's error name (``MSG_SIZE_TOO_LARGE``, ``_MSG_TIMED_OUT``...).
        retriable: Whether trying again can succeed (timeouts, missing replicas).
    """

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        problem: str,
        code: str = "",
        retriable: bool = False,
    ) -> None:
        super().__init__(topic, partition, offset, problem)
        self.code = code
        self.retriable = retriable


class DeadLetterLimitError(StreamkitError):
    """More records were dead-lettered than the agent's DeadLetterPolicy allows.

    The worker stops instead of draining a stream into the dead-letter topic:
    a bad deploy usually fails every record, and those stay uncommitted.
    """


class BrokerError(StreamkitError):
    """A fatal Kafka client error: the worker cannot go on and stops."""


class FencedError(BrokerError):
    """Exactly once: the broker fenced this worker's transactional producer.

    Either another process runs with the same identity (the same
    ``group_instance_id``: the broker keeps the newer one), or this worker
    stalled past ``transaction_timeout_ms`` and the broker aborted its
    transaction. Nothing of the aborted transaction is visible to
    ``read_committed`` readers, and its input offsets were not committed.
    The worker re-creates its producer once; fenced again soon after, it stops.
    """


class StateError(StreamkitError):
    """A table was used where it cannot be: outside its agents, or for another partition's key.

    It is the code's (or the deployment's) fault, not the record's, so it
    stops the worker instead of dead-lettering every record that hits it.
    """


class StoreCorrupted(StateError):
    """A local store's files cannot be opened or read.

    The runtime answers it by deleting the store and rebuilding it from the
    changelog topic, with a warning; agents never see it.
    """


class LocalKafkaError(StreamkitError):
    """The local development broker could not be fetched, formatted or started."""


class ClientError(StreamkitError):
    """The client for non-agent code could not do what it was asked."""


class RemoteError(ClientError):
    """An agent failed for good on a request (``ask``, a submitted task's result).

    Raised on the caller's side with what the worker knew: the exception's
    type and message, the attempts made, the stage that failed, and where
    the record was dead-lettered, so the caller can show it or redrive it.
    """

    def __init__(
        self,
        type_name: str,
        message: str,
        *,
        attempts: int = 0,
        stage: str | None = None,
        dead_letter_topic: str | None = None,
        record: str | None = None,
    ) -> None:
        self.type_name = type_name
        self.message = message
        self.attempts = attempts
        self.stage = stage
        self.dead_letter_topic = dead_letter_topic
        self.record = record
        where = f"; dead-lettered to {dead_letter_topic}" if dead_letter_topic else ""
        super().__init__(f"{type_name}: {message} (after {attempts} attempts{where})")


class RequestTimeout(ClientError, TimeoutError):
    """No reply, or no final task status, within the timeout given."""


class AgentSignal(Exception):
    """Base of the exceptions agent code raises on purpose to steer a record."""


class SkipRecord(AgentSignal):
    """Skip this record deliberately: nothing is emitted, its offset is committed."""


class DeadLetter(AgentSignal):
    """Send this record to the dead-letter topic now, without retries.

    Args:
        reason: Why; becomes the ``__streams.errors.message`` header.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
