"""Declared topics against the cluster: what exists, and where it disagrees.

``streamkit topics create`` only creates what is missing; it never changes
an existing topic. A topic created by hand with 2 partitions instead of the
declared 4 therefore goes unnoticed until keys land on the wrong workers.
``streamkit topics describe`` makes such drift visible and fails CI on it.

Only what a declaration sets is checked: a topic declared without
``partitions=`` accepts any count, and only the configs named in
``config={...}`` are compared (as strings, the way the broker reports them).
``retention.ms`` and ``cleanup.policy`` are always shown, never checked
unless declared.

Replication is also checked against the app's ``replication`` setting, which
is what streamkit creates a topic with when its declaration sets none (every
dead-letter, retry-tier and timers topic). A topic is *under-replicated*
when it has fewer replicas than that (or than its own ``replication=``), or
when a partition has fewer in-sync replicas than replicas. The first is
drift like any other and fails the check; the second is the cluster's
health at this moment (a broker restarting in a rolling upgrade shrinks the
in-sync sets for minutes), so it is flagged but does not fail it.

:func:`check_topics` is pure; :func:`fetch_observed` is the one call that
reads the cluster (one metadata request and one DescribeConfigs request).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from streamkit.errors import BrokerError
from streamkit.ops._admin import error_text, result
from streamkit.ops.topology import serde_name
from streamkit.topics import Topic

# Shown for every topic: the two configs that decide whether data survives.
SHOWN_CONFIGS = ("cleanup.policy", "retention.ms")


@dataclass(frozen=True, slots=True)
class ObservedTopic:
    """A topic as the cluster reports it.

    Attributes:
        name: Topic name.
        partitions: Partition count.
        replication: Replication factor: the smallest replica count over its
            partitions, so a partition mid-reassignment does not hide a short one.
        configs: Topic configs by name (values as the broker reports them).
        in_sync: The smallest in-sync replica count over its partitions
            (``None``: not reported).
        under_replicated_partitions: Partitions whose in-sync replicas are
            fewer than their replicas.
    """

    name: str
    partitions: int
    replication: int
    configs: Mapping[str, str] = field(default_factory=dict)
    in_sync: int | None = None
    under_replicated_partitions: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One setting where the cluster disagrees with the declaration.

    Attributes:
        setting: ``partitions``, ``replication``, or a config name.
        declared: The declared value.
        actual: The cluster's value; ``None`` for a config the broker does not report.
    """

    setting: str
    declared: int | str
    actual: int | str | None

    def __str__(self) -> str:
        actual = "unset" if self.actual is None else self.actual
        return f"{self.setting} is {actual}, declared {self.declared}"

    def to_json(self) -> dict[str, Any]:
        """Stable JSON shape: ``setting``, ``declared``, ``actual``."""
        return {"setting": self.setting, "declared": self.declared, "actual": self.actual}


@dataclass(frozen=True, slots=True)
class TopicCheck:
    """One declared topic compared with the cluster.

    Attributes:
        declared: The declaration.
        observed: What the cluster has, ``None`` if the topic does not exist.
        mismatches: Declared settings the cluster disagrees with.
        expected_replication: The fewest replicas the topic should have: its
            own ``replication=``, else the app's ``replication`` setting;
            ``None`` when neither is set (any count is accepted).
    """

    declared: Topic
    observed: ObservedTopic | None
    mismatches: tuple[Mismatch, ...]
    expected_replication: int | None = None

    @property
    def name(self) -> str:
        """The topic name."""
        return self.declared.name

    @property
    def exists(self) -> bool:
        """Whether the topic exists on the cluster."""
        return self.observed is not None

    @property
    def replication_short(self) -> bool:
        """Whether it has fewer replicas than :attr:`expected_replication`."""
        expected, observed = self.expected_replication, self.observed
        return observed is not None and expected is not None and observed.replication < expected

    @property
    def under_replicated(self) -> bool:
        """Fewer replicas than expected, or a partition with fewer in sync than replicas."""
        observed = self.observed
        return self.replication_short or bool(observed and observed.under_replicated_partitions)

    @property
    def ok(self) -> bool:
        """Whether it exists, matches its declaration and has the replicas expected.

        A partition that is only short of in-sync replicas does not count:
        see the module docstring.
        """
        return self.exists and not self.mismatches and not self.replication_short

    def shown_configs(self) -> dict[str, str]:
        """The configs worth showing: :data:`SHOWN_CONFIGS` plus every declared one."""
        if self.observed is None:
            return {}
        keys = sorted({*SHOWN_CONFIGS, *self.declared.config})
        return {k: self.observed.configs[k] for k in keys if k in self.observed.configs}

    def problems(self) -> list[str]:
        """One line per problem, for people."""
        observed = self.observed
        if observed is None:
            return [f"{self.name}: does not exist (streamkit topics create makes it)"]
        lines = [f"{self.name}: {m}" for m in self.mismatches]
        if self.replication_short and self.declared.replication is None:
            # A declared factor is already reported as a mismatch above.
            lines.append(
                f"{self.name}: replication is {observed.replication}, below the app's "
                f"replication setting {self.expected_replication}"
            )
        if observed.under_replicated_partitions:
            which = ", ".join(map(str, observed.under_replicated_partitions))
            lines.append(
                f"{self.name}: partitions {which} under-replicated: fewer in-sync replicas "
                "than replicas (a broker is down or behind)"
            )
        return lines

    def to_json(self) -> dict[str, Any]:
        """Stable JSON shape; cluster values are ``null`` for a missing topic."""
        observed = self.observed
        return {
            "topic": self.name,
            "exists": self.exists,
            "ok": self.ok,
            "partitions": None if observed is None else observed.partitions,
            "replication": None if observed is None else observed.replication,
            "in_sync": None if observed is None else observed.in_sync,
            "expected_replication": self.expected_replication,
            "under_replicated": self.under_replicated,
            "under_replicated_partitions": (
                [] if observed is None else list(observed.under_replicated_partitions)
            ),
            "configs": self.shown_configs(),
            "key_serde": serde_name(self.declared.key_serde),
            "value_serde": serde_name(self.declared.value_serde),
            "declared": {
                "partitions": self.declared.partitions,
                "replication": self.declared.replication,
                "configs": {k: str(v) for k, v in sorted(self.declared.config.items())},
            },
            "mismatches": [m.to_json() for m in self.mismatches],
        }


@dataclass(frozen=True, slots=True)
class DescribeReport:
    """Every declared topic of an app, checked.

    Attributes:
        app: The app name.
        topics: One check per declared topic, sorted by name.
        replication: The app's ``replication`` setting (``None``: the broker's default).
    """

    app: str
    topics: tuple[TopicCheck, ...]
    replication: int | None = None

    @property
    def ok(self) -> bool:
        """Whether every declared topic exists, matches and is not short of replicas.

        The CLI exits 0 exactly when this holds.
        """
        return all(t.ok for t in self.topics)

    @property
    def under_replicated(self) -> bool:
        """Whether any topic is under-replicated (:attr:`TopicCheck.under_replicated`)."""
        return any(t.under_replicated for t in self.topics)

    def problems(self) -> list[str]:
        """Every problem, one line each, in topic order."""
        return [line for t in self.topics for line in t.problems()]

    def to_json(self) -> dict[str, Any]:
        """``{"app", "ok", "replication", "under_replicated", "topics": [...]}``.

        The keys are part of the CLI's contract.
        """
        return {
            "app": self.app,
            "ok": self.ok,
            "replication": self.replication,
            "under_replicated": self.under_replicated,
            "topics": [t.to_json() for t in self.topics],
        }


def mismatches(declared: Topic, observed: ObservedTopic) -> tuple[Mismatch, ...]:
    """Compare what a declaration sets with the cluster; unset means "any"."""
    found = []
    if declared.partitions is not None and declared.partitions != observed.partitions:
        found.append(Mismatch("partitions", declared.partitions, observed.partitions))
    if declared.replication is not None and declared.replication != observed.replication:
        found.append(Mismatch("replication", declared.replication, observed.replication))
    for key, value in sorted(declared.config.items()):
        # Declarations may hold ints (retention.ms=3600000); the broker reports strings.
        actual = observed.configs.get(key)
        if actual != str(value):
            found.append(Mismatch(key, str(value), actual))
    return tuple(found)


def check_topic(
    declared: Topic, observed: ObservedTopic | None, replication: int | None = None
) -> TopicCheck:
    """Check one declared topic against what the cluster has (``None``: missing).

    ``replication`` is the app's setting: the replicas expected of a topic
    that declares none.
    """
    found = () if observed is None else mismatches(declared, observed)
    expected = declared.replication if declared.replication is not None else replication
    return TopicCheck(declared, observed, found, expected)


def check_topics(
    app: str,
    declared: Iterable[Topic],
    observed: Mapping[str, ObservedTopic],
    *,
    replication: int | None = None,
) -> DescribeReport:
    """Check every declared topic; ``observed`` holds the ones that exist.

    ``replication`` is the app's ``replication`` setting (``AppConfig.replication``).
    """
    checks = (check_topic(t, observed.get(t.name), replication) for t in declared)
    return DescribeReport(app, tuple(sorted(checks, key=lambda c: c.name)), replication)


def fetch_observed(
    admin: AdminClient, names: Iterable[str], timeout: float = 30.0
) -> dict[str, ObservedTopic]:
    """Read partitions, replicas, in-sync replicas and configs of the named topics that exist.

    Raises:
        BrokerError: The cluster did not answer within ``timeout``.
    """
    try:
        metadata = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerError(f"cannot read topic metadata: {error_text(exc)}") from None
    present = sorted(n for n in set(names) if n in metadata and metadata[n].error is None)
    if not present:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in present]
    futures = admin.describe_configs(resources, request_timeout=timeout)
    configs: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        entries = result(future, f"read configs of topic {resource.name}", timeout)
        configs[resource.name] = {
            key: entry.value for key, entry in entries.items() if entry.value is not None
        }
    observed = {}
    for name in present:
        partitions = metadata[name].partitions.values()
        observed[name] = ObservedTopic(
            name=name,
            partitions=len(partitions),
            replication=min((len(p.replicas) for p in partitions), default=0),
            configs=configs.get(name, {}),
            in_sync=min((len(p.isrs) for p in partitions), default=0),
            under_replicated_partitions=tuple(
                sorted(p.id for p in partitions if len(p.isrs) < len(p.replicas))
            ),
        )
    return observed
