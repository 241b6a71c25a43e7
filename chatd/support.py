"""The support desk: a private conversation room per customer, and a live queue for agents.

A customer's room is `support-<user id in lower case, '.' as '_'>`; only that customer and
agents may see it. The desk follows the events of every support room (as the broadcaster
commits them, and from the recovered history at start) to keep each conversation's status,
and pushes each change to the agents who asked for the queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from chatd import wire
from chatd.rooms import Event, Room

PREFIX = "support-"


def support_room_of(user: str) -> str:
    """The customer's room; user ids are [A-Za-z0-9_.-], room names [a-z0-9_-]."""
    return PREFIX + user.casefold().replace(".", "_")


@dataclass
class Conversation:
    room: str
    customer: str | None = None
    status: str = "new"  # new | waiting | answered
    waiting_since: str | None = None
    last: dict | None = None
    agents: list[str] = field(default_factory=list)

    def entry(self) -> dict:
        return {
            "room": self.room,
            "customer": self.customer,
            "status": self.status,
            "waiting_since": self.waiting_since,
            "agents": self.agents,
            "last": self.last,
        }

    def urgency(self) -> tuple:
        """Sort key: waiting (longest first), then new, then answered (latest first)."""
        if self.status == "waiting":
            return (0, self.waiting_since or "")
        if self.status == "new":
            return (1, self.room)
        return (2, _negated(self.last["ts"] if self.last else ""))


def _negated(text: str) -> tuple[int, ...]:
    return tuple(-ord(character) for character in text)


class SupportDesk:
    def __init__(self, agent_role: str):
        self.agent_role = agent_role
        self.conversations: dict[str, Conversation] = {}
        self._watchers: list = []  # agent sessions subscribed to the queue

    def is_agent(self, session) -> bool:
        return self.agent_role in session.roles

    def customer_room(self, session) -> str | None:
        return None if self.is_agent(session) else support_room_of(session.user)

    def may_see(self, session, room: str, exists: bool) -> bool:
        """Agents: any existing conversation. Customers: only their own (which they create)."""
        if self.is_agent(session):
            return exists
        if room != support_room_of(session.user):
            return False
        owner = self.conversations.get(room)
        return owner is None or owner.customer in (None, session.user)

    # -- following the rooms ------------------------------------------------------------------

    def recover(self, room: Room) -> None:
        """Rebuild a conversation from the history a room recovered from its transcript."""
        conversation = self._conversation(room.name)
        for line in room.latest(room.committed_seq):
            self._apply(conversation, json.loads(line))

    def observe(self, room: Room, event: Event) -> None:
        """A support room committed an event: update its conversation and tell the agents."""
        conversation = self._conversation(room.name)
        self._apply(conversation, json.loads(event.line))
        conversation.agents = [
            name for name, member in room.members.items() if self.is_agent(member)
        ]
        frame = wire.encode({"type": "conversation", **conversation.entry()})
        for watcher in self._watchers:
            watcher.connection.send(frame)

    def _conversation(self, room: str) -> Conversation:
        conversation = self.conversations.get(room)
        if conversation is None:
            conversation = self.conversations[room] = Conversation(room)
        return conversation

    def _apply(self, conversation: Conversation, record: dict) -> None:
        sender = record.get("from", record.get("user"))
        if (
            conversation.customer is None
            and sender
            and support_room_of(sender) == conversation.room
        ):
            conversation.customer = sender
        if record["type"] != "message":
            return
        conversation.last = {"from": sender, "text": record["text"], "ts": record["ts"]}
        if sender == conversation.customer:
            if conversation.status != "waiting":
                conversation.status, conversation.waiting_since = "waiting", record["ts"]
        else:
            conversation.status, conversation.waiting_since = "answered", None

    # -- the agents' queue --------------------------------------------------------------------

    def watch(self, session, ref: str | None) -> bytes:
        if session not in self._watchers:
            self._watchers.append(session)
        ordered = sorted(self.conversations.values(), key=Conversation.urgency)
        return wire.with_events(
            {"type": "queue", "ref": ref},
            "conversations",
            [wire.encode(conversation.entry()) for conversation in ordered],
        )

    def forget(self, session) -> None:
        if session in self._watchers:
            self._watchers.remove(session)
