"""
Who sends to whom in each message scenario.

A topology works on client slots (indexes into the run's connections): it
names each sender's target, how many people each message is for, and whether
a given connection is one of them.  The group topology also creates its
groups on the server before the phase starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import gatherResults

if TYPE_CHECKING:
    from chat.bench.clients import JsonClient

MESSAGE_SCENARIOS = ("private", "group", "broadcast")


class Topology(Protocol):
    name: str

    def senders(self) -> list[int]:
        """
        The slots that have someone to send to.
        """

    def target(self, sender: int) -> str: ...

    def fanout(self, sender: int) -> int:
        """
        How many connections of the run each message of C{sender} is for.
        """

    def intended(self, sender: int, recipient: int) -> bool: ...


class Private:
    """
    Pairs of people writing to each other: slots 0 and 1, 2 and 3, and so on
    over C{members}; an odd one out only listens.
    """

    name = "private"

    def __init__(self, names: Sequence[str], members: Sequence[int]) -> None:
        self._names = names
        self._partner: dict[int, int] = {}
        for first, second in zip(members[0::2], members[1::2], strict=False):
            self._partner[first] = second
            self._partner[second] = first

    def senders(self) -> list[int]:
        return sorted(self._partner)

    def partner(self, slot: int) -> int | None:
        return self._partner.get(slot)

    def target(self, sender: int) -> str:
        return self._names[self._partner[sender]]

    def fanout(self, sender: int) -> int:
        return 1 if sender in self._partner else 0

    def intended(self, sender: int, recipient: int) -> bool:
        return self._partner.get(sender) == recipient


class Groups:
    """
    Consecutive slots in groups of C{size}; a remainder too small to be a
    group of its own joins the last group.
    """

    name = "group"

    def __init__(self, names: Sequence[str], size: int, prefix: str) -> None:
        if size < 2:
            raise ValueError("a group needs at least 2 members")
        count = len(names)
        self._groups = max(1, count // size)
        self._size = size
        self._count = count
        self.group_names = [f"{prefix}g{n}" for n in range(self._groups)]

    def group_of(self, slot: int) -> int:
        return min(slot // self._size, self._groups - 1)

    def members(self, group: int) -> range:
        end = self._count if group == self._groups - 1 else (group + 1) * self._size
        return range(group * self._size, end)

    def senders(self) -> list[int]:
        return [s for s in range(self._count) if self.fanout(s) > 0]

    def target(self, sender: int) -> str:
        return "#" + self.group_names[self.group_of(sender)]

    def fanout(self, sender: int) -> int:
        return len(self.members(self.group_of(sender))) - 1

    def intended(self, sender: int, recipient: int) -> bool:
        return recipient != sender and self.group_of(recipient) == self.group_of(sender)

    async def prepare(self, clients: Sequence[JsonClient]) -> None:
        """
        Create every group, its first member as admin, and let the others join.
        """
        await gatherResults(
            [
                clients[self.members(g)[0]].request(
                    "group_create", name=name, description="chat-bench"
                )
                for g, name in enumerate(self.group_names)
            ],
            consumeErrors=True,
        )
        await gatherResults(
            [
                clients[slot].request("group_join", group=self.group_names[g])
                for g in range(self._groups)
                for slot in self.members(g)[1:]
            ],
            consumeErrors=True,
        )


class Broadcast:
    """
    Everyone writes to everyone: each message is for every other connection.
    """

    name = "broadcast"

    def __init__(self, count: int) -> None:
        self._count = count

    def senders(self) -> list[int]:
        return list(range(self._count)) if self._count > 1 else []

    def target(self, sender: int) -> str:
        return "*"

    def fanout(self, sender: int) -> int:
        return self._count - 1

    def intended(self, sender: int, recipient: int) -> bool:
        return recipient != sender
