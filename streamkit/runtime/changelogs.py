"""Changelog topics at start: created with their source's partition count, or checked.

A changelog must have exactly its source's partitions (slice *p* of a table
is restored from changelog partition *p*) and must be compacted and never
deleted (it *is* the table). Both are checked before the worker joins its
group, so a wrong topic stops it with a message naming the topic, instead of
restoring the wrong keys.
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka.admin import AdminClient, ConfigResource

from streamkit.agent import Agent
from streamkit.backends.kafka import ensure_topics
from streamkit.errors import DeclarationError

_TIMEOUT_S = 30.0


def ensure_changelogs(
    admin: AdminClient, agents: Sequence[Agent], create: bool, replication: int | None
) -> list[str]:
    """Create the missing changelogs of ``agents``' tables (``create``) and check all of them.

    Returns:
        The changelogs this call created.

    Raises:
        DeclarationError: A changelog has another partition count than its
            source, is not compacted, or also deletes by retention.
    """
    stateful = [a for a in agents if a.tables]
    if not stateful:
        return []
    metadata = admin.list_topics(timeout=_TIMEOUT_S)
    wanted = []
    for agent in stateful:
        found = metadata.topics.get(agent.source.name)
        partitions = len(found.partitions) if found is not None else agent.source.partitions
        wanted += [t.changelog(partitions) for t in agent.tables]
    created: list[str] = []
    if create:
        created = ensure_topics(admin, wanted, timeout=_TIMEOUT_S, replication=replication)
        metadata = admin.list_topics(timeout=_TIMEOUT_S)
    names = [t.name for t in wanted if t.name in metadata.topics]
    configs = admin.describe_configs([ConfigResource("topic", n) for n in names])
    for agent in stateful:
        source = metadata.topics.get(agent.source.name)
        for table in agent.tables:
            topic = metadata.topics.get(table.changelog_name)
            if topic is None:
                continue  # reported by the restore, naming the command that creates it
            if source is not None and len(topic.partitions) != len(source.partitions):
                raise DeclarationError(
                    f"table {table.name}: changelog {table.changelog_name} has "
                    f"{len(topic.partitions)} partitions and its source {agent.source.name} "
                    f"{len(source.partitions)}; they must be equal (delete the changelog and "
                    "let streamkit create it: the table starts empty)"
                )
            future = next(f for r, f in configs.items() if r.name == table.changelog_name)
            policy = future.result(timeout=_TIMEOUT_S)["cleanup.policy"].value or ""
            if set(policy.split(",")) != {"compact"}:
                raise DeclarationError(
                    f"table {table.name}: changelog {table.changelog_name} has cleanup.policy="
                    f"{policy}; it must be compact only (delete would drop keys that were "
                    "not written lately): kafka-configs --alter --add-config cleanup.policy=compact"
                )
    return created
