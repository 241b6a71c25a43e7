"""`[support] unattended_after`: a customer message that no agent answered in time.

Beside the desk, on the same hooks (a pipeline observer and a start hook). When a customer
writes in their conversation and no agent has answered since, a timer starts; an agent's
message (not a bot's, whose events carry `"bot": true`) or a `status` event cancels it. If it
runs out, an `unattended` event is written into the conversation:

    {"type": "unattended", "room": ..., "seq": ..., "customer": "carol",
     "since": "<ts of the first unanswered message>", "after": 300}

so that webhooks that want `unattended` get it in order with the room's other events, and at
least once. One per waiting spell: the customer's further messages start no new timer until an
agent has answered. After a restart the desk's recovered queue re-arms the timers (a spell that
already has its event in the transcript is not fired again).

In Redis mode every node follows every conversation and keeps its timers, but only the node
that leads the desk (chatd/redis/desk.py) writes the event; the others look again a little
later, in case the leader is gone.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.logger import Logger

from chatd.events import Event, format_ts
from chatd.rooms import Draft, Room
from chatd.support import customer_of

SCAN_EVENTS = 500
# Redis mode: a node that does not lead the desk looks again this often while a spell lasts.
NOT_LEADING_RETRY = 5.0


class UnattendedWatch:
    _log = Logger()

    def __init__(self, after: float, desk):
        self.after = after
        self._desk = desk
        self._server = None
        self._timers: dict[str, object] = {}  # room -> the clock's call
        self._since: dict[str, float] = {}  # room -> ts of the first unanswered message
        self._fired: set[str] = set()  # rooms whose current spell already has its event

    def attach(self, server) -> None:
        self._server = server
        server.pipeline.observers.append(self.observe)
        server.on_start.append(self.recover)
        self._desk.followed.append(self._followed)

    # -- following the conversations ----------------------------------------------------------

    def observe(self, room: Room, events: list[Event]) -> None:
        customer = customer_of(room.name)
        if customer is None:
            return
        for event in events:
            if event.kind == "status":
                self._answered(room.name)
            elif event.kind == "unattended":
                self._fired.add(room.name)
            elif event.kind == "message" and not event.record.get("bot"):
                if event.sender == customer:
                    self._waiting(room.name, event.ts)
                else:
                    self._answered(room.name)

    def _waiting(self, room: str, since: float) -> None:
        if room in self._since or room in self._fired:
            return
        self._since[room] = since
        clock = self._server.clock
        delay = max(since + self.after - clock.seconds(), 0.0)
        self._timers[room] = clock.callLater(delay, self._fire, room)

    def _followed(self, room: Room) -> None:
        """A conversation entered this node's queue (Redis mode: taken on from Redis)."""
        conversation = self._desk.conversations[room.name]
        if conversation.waiting_since is None or conversation.status != "open":
            return
        if _has_event_since(reversed(room.events()), conversation.waiting_since):
            self._fired.add(room.name)
        else:
            self._waiting(room.name, conversation.waiting_since)

    def _answered(self, room: str) -> None:
        self._since.pop(room, None)
        self._fired.discard(room)
        call = self._timers.pop(room, None)
        if call is not None and call.active():
            call.cancel()

    def _fire(self, room_name: str) -> None:
        self._timers.pop(room_name, None)
        if room_name in self._fired:  # written meanwhile, by the node that leads the desk
            self._since.pop(room_name, None)
            return
        shared = self._desk.shared
        if shared is not None and not shared.leads():
            clock = self._server.clock
            self._timers[room_name] = clock.callLater(NOT_LEADING_RETRY, self._fire, room_name)
            return
        since = self._since.pop(room_name, None)
        server = self._server
        room = server.directory.find(room_name)
        if room is None or since is None:
            return
        self._fired.add(room_name)
        fields = {
            "customer": customer_of(room_name),
            "since": format_ts(since),
            "after": self.after,
        }
        self._log.info(
            "support: {room} unanswered for {after}s: an unattended event",
            room=room_name,
            after=self.after,
        )
        server.post(room, Draft("unattended", fields, None, server.now()))

    # -- after a restart ----------------------------------------------------------------------

    def recover(self) -> None:
        """Re-arm the timers of the conversations the desk recovered as waiting."""
        store = self._server.store
        for name, conversation in self._desk.conversations.items():
            if conversation.waiting_since is None or conversation.status != "open":
                continue
            if _has_event_since(store.read_back(name), conversation.waiting_since):
                self._fired.add(name)
            else:
                self._waiting(name, conversation.waiting_since)


def _has_event_since(newest_first: Iterable[Event], since: float) -> bool:
    """Whether the spell that began at `since` has its `unattended` event already."""
    for count, event in enumerate(newest_first):
        if event.ts < since or count >= SCAN_EVENTS:
            return False
        if event.kind == "unattended":
            return True
    return False
