"""The support desk: a private conversation room per customer, and a live queue for agents.

It attaches to the server from outside the core: a room guard (who may see which room), a
pipeline observer (each committed event of a conversation updates its queue entry), two
request handlers (`queue`, `resolve`), a welcome field (the customer's own room) and a hook
when a session ends (it stops watching the queue).

A customer's room is named from the user id without collisions (`support_room_of`): the id
itself when it is only lower-case letters, digits and '-', else '_' and the id in base32, so two
distinct ids never share a room. A conversation enters the queue with the customer's first
message, is `open` until an agent resolves it (a `status` event in its transcript), and opens
again with the customer's next message. Resolved conversations leave the queue after
`[support] resolved_ttl`.

A conversation is assigned to one agent or to none: `assign` claims it (or gives it to a named
agent) only while it is unassigned, so of two agents claiming at once the first wins and the
second gets `conflict`; `transfer` moves it to another agent (or back to none) whoever holds
it. The desk updates the assignee when the request is taken, before the `assignment` event is
stored, so a later request in the same turn sees it (and the update is undone if the event
cannot be stored). With `[support] auto_assign = round_robin`, open unassigned conversations
go to online agents (chatd/agents.py) in turn, each up to `max_open_per_agent` open ones.

After a restart the queue is rebuilt from the transcripts without loading any room: each
`support-*` room's transcript is read from its end, at most `MAX_SCAN_EVENTS` events back (past
its latest `status` event only to the customer's message before it, which gives the entry its
`last` and `customer_name`; never past its first event), into rotated files through one
listing of the directory for all rooms; so start-up costs a bounded amount per conversation
and one directory entry per other room.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from twisted.logger import Logger

from chatd import errors, wire
from chatd.agents import OFFLINE, ONLINE, Agent, Roster
from chatd.canned import CannedFileError, load_canned
from chatd.config import SupportConfig
from chatd.errors import ChatError
from chatd.events import Event, format_ts
from chatd.names import USER_ID
from chatd.rooms import Draft, Room
from chatd.transcript import SUFFIX, rotated_index

PREFIX = "support-"
# Unread counts stop at this many customer messages ("99+" for a client).
UNREAD_COUNTED = 100
MAX_SCAN_EVENTS = 500
QUEUE_PAGE = 50
QUEUE_PAGE_MAX = 200
_PLAIN_ID = re.compile(r"[a-z0-9][a-z0-9-]*")


def support_room_of(user: str) -> str:
    """The customer's room: `support-alice` for `alice`, `support-_<base32>` for `Alice.B`."""
    if _PLAIN_ID.fullmatch(user):
        return PREFIX + user
    return PREFIX + "_" + base64.b32encode(user.encode()).decode().rstrip("=").lower()


def customer_of(room: str) -> str | None:
    """The user id whose conversation `room` is, or None if it is no customer's room."""
    if not room.startswith(PREFIX):
        return None
    rest = room[len(PREFIX) :]
    if rest.startswith("_"):
        encoded = rest[1:].upper()
        try:
            user = base64.b32decode(encoded + "=" * (-len(encoded) % 8)).decode()
        except (binascii.Error, ValueError):
            return None
    else:
        user = rest
    if not USER_ID.fullmatch(user) or support_room_of(user) != room:
        return None
    return user


@dataclass
class Conversation:
    room: str
    customer: str
    customer_name: str
    status: str = "open"  # open | resolved
    waiting_since: float | None = None  # the customer's first message no one answered yet
    last: dict | None = None
    updated: float = 0.0
    resolved_at: float | None = None
    agents: list[str] = field(default_factory=list)
    assignee: str | None = None
    assignee_name: str | None = None
    # The customer message that opened it (first, or after a resolution), whether an agent
    # has answered since, and the customer's rating of its latest resolution.
    opened_at: float | None = None
    answered: bool = False
    rating: int | None = None
    # The seqs of the customer's latest messages, for each agent's unread count (read markers).
    epoch: str | None = None
    customer_seqs: deque = field(default_factory=lambda: deque(maxlen=UNREAD_COUNTED))
    # From the customer's latest `profile` event: the name then stays the entry's name, even
    # if the customer later writes under another (a visitor who came back after a restart).
    customer_email: str | None = None
    profiled: bool = False

    def entry(self) -> dict:
        # `customer_email` only once the customer left one (a profile).
        email = {} if self.customer_email is None else {"customer_email": self.customer_email}
        return {
            **email,
            "room": self.room,
            "customer": self.customer,
            "customer_name": self.customer_name,
            "status": self.status,
            "waiting_since": _ts(self.waiting_since),
            "updated": _ts(self.updated),
            "agents": self.agents,
            "assignee": self.assignee,
            "assignee_name": self.assignee_name,
            "rating": self.rating,
            "last": self.last,
        }

    def apply(self, event: Event) -> tuple[str, float] | None:
        """Follow one committed event of the conversation's room; returns a milestone it
        reached, for the desk's KPIs: ("first_response" | "resolution", seconds since the
        conversation opened)."""
        record = event.record
        if event.epoch != self.epoch:
            self.epoch = event.epoch
            self.customer_seqs.clear()
        if event.kind == "rating":
            self.rating = record.get("score")
            return None
        if event.kind == "profile":
            self.customer_name = record.get("name", self.customer_name)
            self.customer_email = record.get("email", self.customer_email)
            self.profiled = True
            return None
        if event.kind == "assignment":
            self.assignee = record.get("assignee")
            self.assignee_name = record.get("assignee_name")
            self.updated = event.ts
            return
        if event.kind == "status":
            was = self.status
            self.status = record.get("status", self.status)
            self.updated = event.ts
            if self.status == "resolved":
                self.resolved_at, self.waiting_since = event.ts, None
                if was != "resolved" and self.opened_at is not None:
                    return ("resolution", event.ts - self.opened_at)
            return None
        if event.kind != "message":
            return None
        self.updated = event.ts
        self.last = {
            "from": event.sender,
            "name": record.get("name", event.sender),
            "text": record.get("text"),
            "ts": record.get("ts"),
        }
        if event.sender == self.customer:
            self.customer_seqs.append(event.seq)
            if not self.profiled:
                self.customer_name = record.get("name", self.customer_name)
            if self.opened_at is None or self.status == "resolved":
                self.opened_at, self.answered, self.rating = event.ts, False, None
            self.status, self.resolved_at = "open", None
            if self.waiting_since is None:
                self.waiting_since = event.ts
            return None
        self.waiting_since = None
        if not self.answered and self.opened_at is not None and not record.get("bot"):
            self.answered = True
            return ("first_response", event.ts - self.opened_at)
        return None

    def sort_key(self) -> tuple:
        """Most urgent first: waiting (longest first), then open, then resolved (latest
        first)."""
        if self.status == "resolved":
            return (2, -(self.resolved_at or 0.0), self.room)
        if self.waiting_since is not None:
            return (0, self.waiting_since, self.room)
        return (1, -self.updated, self.room)


def _ts(seconds: float | None) -> str | None:
    return None if seconds is None else format_ts(seconds)


def _cursor(key: tuple) -> str:
    return f"{key[0]}|{key[1]!r}|{key[2]}"


def _parse_cursor(text: str, ref: str | None) -> tuple:
    try:
        group, number, room = text.split("|", 2)
        return (int(group), float(number), room)
    except ValueError:
        raise ChatError(
            errors.BAD_FRAME, "'before' is not a cursor this server issued", ref
        ) from None


class SupportDesk:
    _log = Logger()

    def __init__(self, config: SupportConfig, canned: list[dict[str, str]] = ()):
        self.config = config
        self.canned = list(canned)  # canned responses for agents (chatd/canned.py)
        self.agent_role = config.agent_role
        self.conversations: dict[str, Conversation] = {}
        self.roster = Roster()
        self._watchers: dict = {}  # agent sessions subscribed to the queue (an ordered set)
        # Welcomed sessions, to count agents' sessions once each (a resumed session says hello
        # again) and to tell customers whether anyone is there.
        self._agent_sessions: dict = {}
        self._customer_sessions: dict = {}
        self._told_online = False  # what customers were last told: is any agent online
        self._server = None
        # Redis mode (chatd/redis/desk.py): tells the other nodes of this node's agents, and
        # says whether this node runs the desk's one-at-a-time duties (auto-assignment).
        self.shared = None
        self.dropped: list = []  # called with each conversation's room as it leaves the queue
        self.followed: list = []  # called with a room whose conversation just entered the queue
        # The milestones the last observed room's events reached, for `_count_own`.
        self._reached: tuple[str, list] = ("", [])

    def attach(self, server) -> None:
        self._server = server
        server.directory.guards.append(self)
        server.pipeline.observers.append(self.observe)
        server.pipeline.origin_observers.append(self._count_own)
        server.handlers["queue"] = self.queue
        server.handlers["resolve"] = self.resolve
        server.handlers["assign"] = self.assign
        server.handlers["transfer"] = self.transfer
        server.handlers["availability"] = self.availability
        server.handlers["rate"] = self.rate
        server.handlers["profile"] = self.profile
        server.welcome_fields.append(self.welcome_fields)
        server.on_session_end.append(self.forget)
        server.on_start.append(self.recover)
        conversations = server.metrics.desk_conversations
        for state in ("open", "waiting", "unassigned", "resolved"):
            conversations.labels(state).set_function(lambda state=state: self._count_in(state))

    def _count_in(self, state: str) -> int:
        values = self.conversations.values()
        if state == "waiting":
            return sum(1 for c in values if c.status == "open" and c.waiting_since is not None)
        if state == "unassigned":
            return sum(1 for c in values if c.status == "open" and c.assignee is None)
        return sum(1 for c in values if c.status == state)

    def is_agent(self, session) -> bool:
        return self.agent_role in session.roles

    def welcome_fields(self, session) -> dict:
        """A customer learns their room and whether an agent is online; an agent's sessions
        are counted (an agent is online from their first)."""
        if not self.is_agent(session):
            self._customer_sessions[session] = None
            room = support_room_of(session.user)
            conversation = self.conversations.get(room)
            if conversation is not None and conversation.profiled:
                # The name the customer gave (a returning visitor's hello carries none).
                session.name = conversation.customer_name
            return {
                "name": session.name,
                "support_room": room,
                "agents_online": self.roster.any_online(),
            }
        if session not in self._agent_sessions:
            self._agent_sessions[session] = None
            user, name = session.user, session.name
            self._share_sessions(self._changed(user, lambda: self.roster.connected(user, name)))
        return {"availability": self.roster.status_of(session.user), "canned": self.canned}

    def reload_canned(self) -> None:
        """SIGHUP: read `[support] canned_file` again and send it to the connected agents; a
        file with a mistake keeps the responses in force."""
        path = self.config.canned_file
        try:
            canned = load_canned(path)
        except (CannedFileError, OSError) as error:
            self._log.warn(
                "[support] canned_file {path}: {error}; keeping the {count} responses in force",
                path=path,
                error=error,
                count=len(self.canned),
            )
            return
        self.canned = canned
        frame = wire.encode({"type": "canned", "responses": canned})
        for session in self._agent_sessions:
            if session.connection is not None:
                session.connection.send(frame)
        self._log.info("[support] canned_file: {count} responses", count=len(canned))

    # -- the room guard -----------------------------------------------------------------------

    def may_see(self, session, room: str, exists: bool) -> bool | None:
        """Agents: any existing conversation. Customers: only their own (which they create),
        and public rooms only with `customers_join_public`."""
        if room.startswith(PREFIX):
            if self.is_agent(session):
                return exists
            return customer_of(room) == session.user
        if not self.is_agent(session) and not self.config.customers_join_public:
            return False
        return None

    def may_post(self, session, room: Room) -> bool | None:
        return None

    # -- following the conversations ----------------------------------------------------------

    def observe(self, room: Room, events: list[Event]) -> None:
        """A room committed events: update its conversation and tell the agents."""
        customer = customer_of(room.name)
        if customer is None:
            return
        conversation = self.conversations.get(room.name)
        created = False
        reached = []
        for event in events:
            if conversation is None:
                if event.kind != "message" or event.sender != customer:
                    continue  # a visitor who never wrote is not in the queue
                conversation = self.conversations[room.name] = Conversation(
                    room.name, customer, event.record.get("name", customer)
                )
                created = True
                # A profile left before the first message (the widget asks first).
                for earlier in room.events():
                    if earlier.kind == "profile" and earlier.seq < event.seq:
                        conversation.apply(earlier)
            reached.append((event.seq, event, conversation.apply(event)))
        self._reached = (room.name, reached)
        if conversation is None:
            return
        if created:
            for follow in self.followed:
                follow(room)
        conversation.agents = self._agents_in(room)
        self._tell_watchers(conversation)
        if conversation.status == "open" and conversation.assignee is None:
            self.auto_assign()
        elif any(event.kind in ("status", "assignment") for event in events):
            self.auto_assign()  # an agent may have room for another conversation now

    def _agents_in(self, room: Room) -> list[str]:
        """The agents among the room's members: by their sessions here, and (Redis mode) the
        members on other nodes that are agents the roster knows."""
        here = [
            user
            for user, member in room.members.items()
            if any(self.is_agent(session) for session in member.sessions)
        ]
        return here + [user for user in room.others if self.roster.name_of(user) is not None]

    def _count_own(self, room: Room, events: list[Event]) -> None:
        """Count the KPIs of events this node posted (each is counted once in a cluster):
        the milestones `observe` just found for them."""
        name, reached = self._reached
        if name != room.name or not reached:
            return
        own = {event.seq for event in events}
        for seq, event, milestone in reached:
            if seq in own:
                self._count(event, milestone)

    def _count(self, event: Event, milestone: tuple[str, float] | None) -> None:
        """The desk's KPIs, from live events only (a restart replays none of them)."""
        metrics = self._server.metrics
        if milestone is not None:
            kind, seconds = milestone
            histogram = (
                metrics.desk_first_response if kind == "first_response" else metrics.desk_resolution
            )
            histogram.observe(max(seconds, 0.0))
        elif event.kind == "rating":
            metrics.desk_ratings.labels(str(event.record.get("score"))).inc()

    def _tell_watchers(self, conversation: Conversation) -> None:
        for watcher in self._watchers:
            entry = self._entry_for(conversation, watcher.user)
            watcher.connection.send(wire.encode({"type": "conversation", **entry}))

    def _entry_for(self, conversation: Conversation, agent: str) -> dict:
        """A queue entry as this agent sees it: with the customer messages they have not read
        (by their read marker in the room, chatd/read_markers.py)."""
        read = 0
        if conversation.epoch is not None:
            read = self._server.read_markers.of(conversation.room, agent, conversation.epoch)
        unread = sum(1 for seq in conversation.customer_seqs if seq > read)
        return {**conversation.entry(), "unread": unread}

    def recover(self) -> None:
        """Rebuild the queue from the transcripts of the support rooms (a bounded scan)."""
        store = self._server.store
        now = self._server.now()
        with os.scandir(store.directory) as entries:
            rooms = [
                entry.name[: -len(SUFFIX)]
                for entry in entries
                if entry.name.startswith(PREFIX) and entry.name.endswith(SUFFIX)
            ]
        rotated = rotated_index(store.directory) if rooms else {}
        for name in rooms:
            customer = customer_of(name)
            if customer is None:
                continue
            conversation = self._scan(name, customer, store.read_back(name, rotated.get(name, [])))
            if conversation is not None and not self._expired(conversation, now):
                self.conversations[name] = conversation
        self._log.info(
            "support desk: {count} conversations in the queue, from {rooms} support rooms",
            count=len(self.conversations),
            rooms=len(rooms),
        )

    def adopt(self, room: Room) -> bool:
        """Redis mode: a conversation's room this node now holds (it follows every one in the
        queue): its entry is built again from the room's events, in memory then in the
        transcripts, as `recover` does. False if the room is no conversation (yet)."""
        customer = customer_of(room.name)
        if customer is None:
            return False
        in_memory = room.events()
        oldest = in_memory[0].seq if in_memory else room.committed_seq + 1

        def newest_first():
            yield from reversed(in_memory)
            if oldest > 1:
                for event in self._server.store.read_back(room.name):
                    if event.epoch != room.epoch:
                        return
                    if event.seq < oldest:
                        yield event

        conversation = self._scan(room.name, customer, newest_first())
        if conversation is None or self._expired(conversation, self._server.now()):
            return False
        self.conversations[room.name] = conversation
        conversation.agents = self._agents_in(room)
        self._tell_watchers(conversation)
        for follow in self.followed:
            follow(room)
        return True

    def _scan(self, name: str, customer: str, events: Iterable[Event]) -> Conversation | None:
        """A conversation's entry from its room's events, newest first (a bounded scan)."""
        newest_first = []
        epoch = None
        resolved = assigned = False
        for event in events:
            if epoch is None:
                epoch = event.epoch
            if event.epoch != epoch:
                break
            newest_first.append(event)
            resolved = resolved or event.kind == "status"
            assigned = assigned or event.kind == "assignment"
            # seq 1 is the start of the history: reading on would list the rotated files of
            # the whole directory for nothing.
            if event.seq == 1 or len(newest_first) >= MAX_SCAN_EVENTS:
                break
            # Past the latest status and assignment only the customer's last message is still
            # wanted (for the entry's `last` and `customer_name`): the state before it is settled.
            if resolved and assigned and event.kind == "message" and event.sender == customer:
                break
        conversation = None
        profiles = []  # left before the first message within reach
        for event in reversed(newest_first):
            if conversation is None:
                if event.kind == "profile":
                    profiles.append(event)
                if event.kind != "message" or event.sender != customer:
                    continue
                conversation = Conversation(name, customer, event.record.get("name", customer))
                for profile in profiles:
                    conversation.apply(profile)
            conversation.apply(event)
        if conversation is None and resolved:
            # Resolved, and no customer message within reach: only presence or agents' words.
            status = next(event for event in newest_first if event.kind == "status")
            conversation = Conversation(name, customer, customer)
            for event in reversed(newest_first):
                conversation.apply(event)
            conversation.status = status.record.get("status", "resolved")
        return conversation

    def _expired(self, conversation: Conversation, now: float) -> bool:
        return (
            conversation.status == "resolved"
            and conversation.resolved_at is not None
            and conversation.resolved_at + self.config.resolved_ttl <= now
        )

    # -- requests -----------------------------------------------------------------------------

    def queue(self, session, request: wire.Queue) -> bytes:
        """Subscribe an agent to the queue; the reply is one page of it."""
        if not self.is_agent(session):
            raise ChatError(
                errors.FORBIDDEN, "only support agents may watch the queue", request.ref
            )
        self._watchers[session] = None
        now = self._server.now()
        for name in [n for n, c in self.conversations.items() if self._expired(c, now)]:
            del self.conversations[name]
            for drop in self.dropped:
                drop(name)
        wanted = [
            conversation
            for conversation in self.conversations.values()
            if request.status in ("all", conversation.status)
            and _in_view(conversation, request.view, session.user)
        ]
        wanted.sort(key=Conversation.sort_key)
        total = len(wanted)
        if request.before is not None:
            after = _parse_cursor(request.before, request.ref)
            wanted = [c for c in wanted if c.sort_key() > after]
        limit = min(request.limit or QUEUE_PAGE, QUEUE_PAGE_MAX)
        page, more = wanted[:limit], len(wanted) > limit
        head = {
            "type": "queue",
            "ref": request.ref,
            "status": request.status,
            "view": request.view,
            "total": total,
            "more": more,
            "next": _cursor(page[-1].sort_key()) if more else None,
            "availability": self._agent_entries(),
        }
        entries = [wire.encode(self._entry_for(c, session.user)) for c in page]
        return wire.with_events(head, "conversations", entries)

    def resolve(self, session, request: wire.Resolve) -> None:
        """An agent marks a conversation resolved: a `status` event in its room."""
        if not self.is_agent(session):
            raise ChatError(errors.FORBIDDEN, "only support agents may resolve", request.ref)
        if customer_of(request.room) is None:
            raise ChatError(
                errors.FORBIDDEN, f"{request.room!r} is not a support conversation", request.ref
            )
        server = self._server
        room = server.directory.visible(session, request.room)
        fields = {"from": session.user, "name": session.name, "status": "resolved"}
        draft = Draft("status", fields, session.user, server.now(), request.ref)
        server.post(room, draft, ack_to=session if request.ref else None)

    def rate(self, session, request: wire.Rate) -> None:
        """The customer rates their resolved conversation: a `rating` event in its room (a
        later rating of the same resolution replaces it in the queue; each is counted)."""
        conversation = self.conversations.get(request.room)
        if conversation is None or conversation.customer != session.user:
            raise ChatError(
                errors.FORBIDDEN, "only the customer may rate their conversation", request.ref
            )
        if conversation.status != "resolved":
            raise ChatError(
                errors.FORBIDDEN, "a conversation can be rated once it is resolved", request.ref
            )
        server = self._server
        room = server.joined_room(session, request.room)
        fields = {"from": session.user, "name": session.name, "score": request.score}
        if request.comment is not None:
            fields["comment"] = request.comment
        draft = Draft("rating", fields, session.user, server.now(), request.ref)
        server.post(room, draft, ack_to=session if request.ref else None)

    def profile(self, session, request: wire.Profile) -> None:
        """The customer gives a name and email for the agents: a `profile` event in their
        conversation; the name is their display name from now on, on every session."""
        if self.is_agent(session):
            raise ChatError(errors.FORBIDDEN, "only customers leave a profile", request.ref)
        server = self._server
        room = server.joined_room(session, support_room_of(session.user))
        name = request.name or session.name
        fields = {"from": session.user, "name": name}
        if request.email is not None:
            fields["email"] = request.email
        draft = Draft("profile", fields, session.user, server.now(), request.ref)
        server.post(room, draft, ack_to=session if request.ref else None)
        server.rename(session.user, name)

    def assign(self, session, request: wire.Assign) -> bytes | None:
        """Claim an unassigned conversation, or give it to a named agent; `conflict` if
        someone holds it already (`transfer` moves it whoever holds it)."""
        conversation = self._conversation_for(session, request)
        agent = request.agent or session.user
        if conversation.assignee not in (None, agent):
            raise ChatError(
                errors.CONFLICT,
                f"{request.room!r} is assigned to {conversation.assignee!r} already",
                request.ref,
            )
        if conversation.assignee == agent:
            # Already so: nothing is written; the ack carries the room's current seq.
            room = self._server.directory.find(request.room)
            return wire.ack(request.ref, room.committed_seq) if request.ref and room else None
        actor = (session.user, session.name)
        self._assign(conversation, agent, request.ref, actor, session, claim=True)
        return None

    def transfer(self, session, request: wire.Transfer) -> None:
        """Move a conversation to another agent, or to none, whoever holds it."""
        conversation = self._conversation_for(session, request)
        self._assign(
            conversation, request.agent, request.ref, (session.user, session.name), session
        )

    def transfer_by_bot(self, room: str, agent: str | None, bot: str, client_id, ack_to) -> None:
        """The server API's assign: a `transfer` by one of `[api] bots`."""
        conversation = self._conversation(room, agent, client_id)
        self._assign(conversation, agent, client_id, (bot, bot), ack_to, bot=True)

    def availability(self, session, request: wire.Availability) -> bytes:
        """An agent says they are online or away."""
        if not self.is_agent(session):
            raise ChatError(
                errors.FORBIDDEN, "only support agents have an availability", request.ref
            )
        agent = self._changed(
            session.user, lambda: self.roster.choose(session.user, request.status)
        )
        if self.shared is not None:
            self.shared.chose(agent.user, agent.chosen)
        return wire.encode(
            {"type": "availability", "ref": request.ref, "user": agent.user, "status": agent.status}
        )

    def _conversation_for(self, session, request) -> Conversation:
        if not self.is_agent(session):
            raise ChatError(errors.FORBIDDEN, "only support agents may assign", request.ref)
        return self._conversation(request.room, request.agent, request.ref)

    def _conversation(self, room: str, agent: str | None, ref) -> Conversation:
        conversation = self.conversations.get(room)
        if conversation is None:
            raise ChatError(errors.NOT_FOUND, f"{room!r} is no conversation in the queue", ref)
        if agent is not None and self.roster.status_of(agent) == OFFLINE:
            raise ChatError(errors.NOT_FOUND, f"{agent!r} is no agent connected now", ref)
        return conversation

    def _assign(
        self,
        conversation: Conversation,
        agent: str | None,
        ref: str | None,
        actor: tuple[str, str] | None = None,
        ack_to=None,
        bot: bool = False,
        claim: bool = False,
    ) -> None:
        """Post an `assignment` event by `actor` (user, name; None: auto-assignment), and take
        it as done at once (undone if the event cannot be stored, unless another assignment
        was applied meanwhile), so that the next request sees it; `ack_to` is acknowledged
        once it is stored, when there is a `ref`. A `claim` holds only while the conversation
        is unassigned: checked here, and again where seqs are given when other nodes assign
        too (Redis mode: `conflict` if another node's claim came first)."""
        server = self._server
        room = server.directory.find(conversation.room)
        if room is None:
            raise ChatError(errors.UNAVAILABLE, f"{conversation.room!r} cannot be read", ref)
        name = None if agent is None else self.roster.name_of(agent) or agent
        fields = {"assignee": agent, "assignee_name": name}
        if actor is None:
            fields["auto"] = True
            sender = None
        else:
            sender = actor[0]
            fields = {"from": sender, "name": actor[1], **fields}
            if bot:
                fields["bot"] = True
        previous = (conversation.assignee, conversation.assignee_name)

        def undo():
            if (conversation.assignee, conversation.assignee_name) == (agent, name):
                conversation.assignee, conversation.assignee_name = previous
                self._tell_watchers(conversation)

        conversation.assignee, conversation.assignee_name = agent, name
        draft = Draft("assignment", fields, sender, server.now(), ref, claim=claim)
        server.post(room, draft, ack_to=ack_to if ref is not None else None, undo=undo)

    def auto_assign(self) -> None:
        """Give open unassigned conversations, most urgent first, to online agents in turn,
        each up to `max_open_per_agent` open conversations."""
        if self.config.auto_assign != "round_robin":
            return
        if self.shared is not None and not self.shared.leads():
            return  # another node assigns
        unassigned = sorted(
            (c for c in self.conversations.values() if c.status == "open" and c.assignee is None),
            key=Conversation.sort_key,
        )
        if not unassigned:
            return
        load = self._open_counts()
        for conversation in unassigned:
            agent = self.roster.pick(load, self.config.max_open_per_agent)
            if agent is None:
                return
            self._assign(conversation, agent, None, claim=True)
            load[agent] = load.get(agent, 0) + 1

    def _open_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for conversation in self.conversations.values():
            if conversation.status == "open" and conversation.assignee is not None:
                counts[conversation.assignee] = counts.get(conversation.assignee, 0) + 1
        return counts

    def _agent_entries(self) -> list[dict]:
        load = self._open_counts()
        return [{**entry, "open": load.get(entry["user"], 0)} for entry in self.roster.entries()]

    def _availability_changed(self, agent) -> None:
        """Tell the agents watching the queue, and the customers when whether anyone is
        online changed; an agent who came online may take waiting conversations."""
        frame = wire.encode({"type": "agent", **agent.entry()})
        for watcher in self._watchers:
            watcher.connection.send(frame)
        online = self.roster.any_online()
        if online != self._told_online:
            self._told_online = online
            notice = wire.encode({"type": "agents", "online": online})
            for customer in self._customer_sessions:
                if customer.connection is not None:
                    customer.connection.send(notice)
        if agent.status == ONLINE:
            self.auto_assign()

    def forget(self, session) -> None:
        self._watchers.pop(session, None)
        self._customer_sessions.pop(session, None)
        if self._agent_sessions.pop(session, False) is None:
            agent = self._changed(session.user, lambda: self.roster.disconnected(session.user))
            if agent is not None:
                self._share_sessions(agent)

    def _changed(self, user: str, change: Callable[[], Agent | None]) -> Agent | None:
        """`change` the roster (it returns the agent, or None); if that moved the agent's
        status, the watchers and customers are told."""
        before = self.roster.status_of(user)
        agent = change()
        if agent is not None and agent.status != before:
            self._availability_changed(agent)
        return agent

    def _share_sessions(self, agent: Agent) -> None:
        """Redis mode: the other nodes learn how many sessions of the agent this one holds."""
        if self.shared is not None:
            self.shared.agent_sessions(agent.user, agent.name, agent.sessions)

    # -- agents on other nodes (Redis mode, chatd/redis/desk.py) --------------------------------

    def agent_elsewhere(self, node: str, user: str, name: str, sessions: int) -> None:
        known = self.roster.name_of(user) is not None
        self._changed(user, lambda: self.roster.seen_elsewhere(node, user, name, sessions))
        if not known:
            self._newly_known_agent(user)

    def _newly_known_agent(self, user: str) -> None:
        """An agent first heard of from another node: the entries listing them among their
        room's members gain them as an agent."""
        rooms = self._server.directory.rooms
        for conversation in self.conversations.values():
            room = rooms.get(conversation.room)
            if room is not None and user in room.others:
                conversation.agents = self._agents_in(room)
                self._tell_watchers(conversation)

    def chosen_elsewhere(self, user: str, status: str) -> None:
        self._changed(user, lambda: self.roster.choose(user, status))

    def node_gone(self, node: str) -> None:
        """A node's agents' sessions count no more (it died, or this node lost track)."""
        for agent, before in self.roster.node_gone(node):
            if agent.status != before:
                self._availability_changed(agent)


def _in_view(conversation: Conversation, view: str, user: str) -> bool:
    if view == "mine":
        return conversation.assignee == user
    if view == "unassigned":
        return conversation.assignee is None
    return True
