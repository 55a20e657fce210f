"""Consumer-group records of the in-memory broker, and its assignor.

:class:`Member` is a consumer's state in its group and :class:`GroupMetadata`
the snapshot of it a transactional producer is handed; :func:`sticky_assignment`
is the cooperative-sticky assignor. The broker holds the groups and changes
them under its lock; this module holds no state, so the assignor is a plain
function of the members and the partitions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from streamkit.types import TopicPartition


@dataclass(eq=False)
class Member:
    """A consumer's state in its group; owned by the broker, changed under its lock.

    Attributes:
        id: Unique on the broker.
        group: The consumer group.
        topics: The subscription.
        reset: ``earliest`` or ``latest``: where a partition without a commit starts.
        owned: Partitions this member holds, with the next offset to fetch.
        paused: Owned partitions that consume() skips.
        in_hand: Records the last consume() returned; zero again once the
            caller comes back, so a driver knows a batch was handed on.
        lost: Partitions taken away by an expiry, for the next ``on_lost``.
        state: ``active``, ``expired`` (must rejoin), ``left`` or ``crashed``.
        isolation: ``read_committed`` (librdkafka's default) or ``read_uncommitted``.
        generation: Counts the member's joins: a rejoin after an expiry makes
            :class:`GroupMetadata` taken before it stale.
    """

    id: str
    group: str
    topics: tuple[str, ...]
    reset: str
    owned: dict[TopicPartition, int] = field(default_factory=dict)
    paused: set[TopicPartition] = field(default_factory=set)
    in_hand: int = 0
    lost: list[TopicPartition] = field(default_factory=list)
    state: str = "active"
    turn: int = 0
    isolation: str = "read_committed"
    generation: int = 0


@dataclass(frozen=True)
class GroupMetadata:
    """What ``consumer_group_metadata()`` returns: opaque to the application.

    Attributes:
        group: The consumer group the offsets are for.
        member: The member that handed it out (``None`` before it joined:
            Kafka then skips the member check, and so does this broker).
        generation: ``member.generation`` when it was handed out.
    """

    group: str
    member: Member | None
    generation: int


def sticky_assignment(
    members: Mapping[str, Member],
    current: Mapping[TopicPartition, str],
    wanted: list[TopicPartition],
) -> dict[TopicPartition, str]:
    """The target assignment: keep owners where balanced, spread the rest evenly.

    Args:
        members: The group's members by id, in join order.
        current: The target so far (partition to member id).
        wanted: Every partition of the subscribed topics, sorted.
    """
    target = {
        tp: m
        for tp, m in current.items()
        if m in members and tp.topic in members[m].topics and tp in wanted
    }
    load = Counter({m: 0 for m in members})
    load.update(target.values())
    for tp in wanted:
        if tp not in target:
            eligible = [m for m in members if tp.topic in members[m].topics]
            if eligible:
                target[tp] = min(eligible, key=lambda m: load[m])
                load[target[tp]] += 1
    moved = True
    while moved:  # each move lowers the spread, so this ends
        moved = False
        for tp in sorted(target, reverse=True):
            owner = target[tp]
            eligible = [m for m in members if tp.topic in members[m].topics]
            lightest = min(eligible, key=lambda m: load[m])
            if load[owner] - load[lightest] >= 2:
                target[tp] = lightest
                load[owner] -= 1
                load[lightest] += 1
                moved = True
                break
    return target


class MemberError(Exception):
    """A commit from a member the group no longer knows (fenced, left or crashed)."""

    def __init__(self, member: str, state: str, reason: str | None = None) -> None:
        self.member = member
        self.state = state
        super().__init__(reason or f"member {member} is {state}, not in its group")
