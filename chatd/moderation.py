"""Edits, deletions and moderation (kick, ban, mute), attached to the server from outside.

Like the support desk, it attaches through the server's hooks: request handlers (`edit`,
`delete`, `kick`, `ban`, `mute`), a room guard (a banned user may not see the room, a muted one
may not post) and a start hook (the sanctions in force are loaded).

Edits and deletions are room events with their own seq that name their `target`. The target's
line is revised where it is kept, before the event is posted: in the transcript files (an
atomic rewrite, chatd/redaction.py, off the reactor thread) and then in the room's memory, so
that everything served from then on (`joined` history, resume, `history` pages from memory or
from the files) shows the edited text, or no text and `"redacted": true`. Only then is the
event posted, and acknowledged once it is durable: an acknowledged delete has left no copy of
the text in the room's transcript files. A delete also strips the text from the edits of its
target. The support agents' notes (notes.py) are edited and deleted the same way; the edit or
delete event has its target's audience, and a target the user may not see is not found.

Moderators are the roles in `[room:NAME] moderate`, and the support agents in support rooms.
Bans and mutes are events in the room's transcript (the record of who did what) and entries
in a small state file beside the transcripts (`moderation.json`), rewritten atomically at each
change, which is what is enforced: a ban must outlast any number of restarts, retention passes
and erasures, which may remove the event itself, and finding the bans in force must not mean
reading a room's whole history.

In Redis mode (`shared`) each change of a user's sanctions in a room is stored in Redis (a
hash per room, `Keys.sanctions`) before its event is posted, instead of `moderation.json`
(whose sanctions are carried over into Redis at start); a node taking a room on gets
them with the room's snapshot (`adopt`), and a node holding it applies the sanction events
other nodes post (`follow`): its copy is updated and its sessions of a kicked or banned user
leave the room. A join taken on from Redis checks the ban again once the room's are known.

Edits and deletions in Redis mode: the node that takes the request revises its memory and
posts the event; every node revises its memory as it delivers the event (and a room taken on
from Redis has the edits and deletions among its latest events applied); the archiving node
rewrites the transcript files as it writes the event (chatd/redis/archiver.py), the only
process that writes them. So an acknowledged delete is in Redis, and out of the transcripts
once the archiver has written it (normally within a fraction of a second).
"""

from __future__ import annotations

import json
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from chatd import errors, rewrite, wire
from chatd.config import RoomsConfig, SupportConfig
from chatd.errors import ChatError
from chatd.events import Event, format_ts, parse_ts
from chatd.redaction import (
    TEXT_KINDS,
    Outcome,
    TranscriptEditor,
    edit,
    files_from,
    redact,
    revision_of,
)
from chatd.rooms import Draft, Room, presence_draft
from chatd.support import customer_of

STATE_FILE = "moderation.json"
# Edits can only come this long after their target's edit window (clock steps): the files
# that may hold edits of a deleted message are chosen with this margin.
EDIT_MARGIN = 3600.0


class Sanctions:
    """Bans and mutes in force: room -> user key -> {"ban"|"mute": until (POSIX seconds)}."""

    def __init__(self, path: Path | None):
        self.path = path
        self.rooms: dict[str, dict[str, dict[str, float]]] = {}

    def load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        data = json.loads(self.path.read_text(encoding="utf-8"))
        self.rooms = {
            room: {user: {k: float(v) for k, v in kinds.items()} for user, kinds in users.items()}
            for room, users in data.get("rooms", {}).items()
        }

    def until(self, room: str, user: str, kind: str, now: float) -> float | None:
        until = self.rooms.get(room, {}).get(user, {}).get(kind)
        return until if until is not None and until > now else None

    def set(self, room: str, user: str, kind: str, until: float | None, now: float) -> None:
        """Impose (until a time) or lift (None) a sanction; saved with the expired ones gone."""
        kinds = self.rooms.setdefault(room, {}).setdefault(user, {})
        if until is None:
            kinds.pop(kind, None)
        else:
            kinds[kind] = until
        self.prune(now)
        self.save()

    def prune(self, now: float) -> None:
        for room in list(self.rooms):
            users = self.rooms[room]
            for user in list(users):
                users[user] = {k: v for k, v in users[user].items() if v > now}
                if not users[user]:
                    del users[user]
            if not users:
                del self.rooms[room]

    def save(self) -> None:
        if self.path is not None:
            data = json.dumps({"version": 1, "rooms": self.rooms}, sort_keys=True, indent=1)
            rewrite.write_atomically(self.path, data.encode() + b"\n")


class Moderation:
    _log = Logger()

    def __init__(
        self,
        rooms: RoomsConfig,
        support: SupportConfig,
        editor: TranscriptEditor,
        state_path: Path | None = None,
    ):
        self.config = rooms
        self.support = support
        self.editor = editor
        self.sanctions = Sanctions(state_path)
        self._server = None
        # Redis mode (chatd/redis/cluster.py): `store(room, user_key, kinds)` keeps a user's
        # sanctions in a room in Redis.
        self.shared = None

    def attach(self, server) -> None:
        self._server = server
        # First, so that no other guard's "yes" lets a banned user in.
        server.directory.guards.insert(0, self)
        for kind in ("edit", "delete"):
            server.handlers[kind] = getattr(self, kind)
        for kind in ("kick", "ban", "mute"):
            server.handlers[kind] = self.sanction
        server.on_start.append(self.start)

    def start(self) -> None:
        rewrite.remove_stale(self.editor.store.directory)
        self.sanctions.load()
        self.sanctions.prune(self._server.now())
        if self.shared is not None:
            # Redis holds them from now on: what a single process had imposed is carried
            # over, and the file (which nodes on one host would rewrite together) is left.
            self.shared.carry_over(self.sanctions.rooms)
            self.sanctions.path = None

    # -- who may -----------------------------------------------------------------------------

    def is_moderator(self, session, room: str) -> bool:
        moderate = self.config.policy(room).moderate
        if moderate and session.may(moderate):
            return True
        return (
            self.support.enabled
            and self.support.agent_role in session.roles
            and customer_of(room) is not None
        )

    def _key(self, user: str) -> str:
        return self._server.sessions.key_of(user)

    def may_see(self, session, room: str, exists: bool) -> bool | None:
        until = self.sanctions.until(room, self._key(session.user), "ban", self._server.now())
        if until is not None:
            raise ChatError(
                errors.FORBIDDEN, f"you are banned from {room!r} until {format_ts(until)}"
            )
        return None

    def may_post(self, session, room: Room) -> bool | None:
        until = self.sanctions.until(room.name, self._key(session.user), "mute", self._server.now())
        if until is not None:
            raise ChatError(
                errors.FORBIDDEN, f"you are muted in {room.name!r} until {format_ts(until)}"
            )
        return None

    # -- edit and delete ---------------------------------------------------------------------

    def _target(self, room: Room, seq: int, session, ref: str) -> Event | Deferred:
        """The message (or note) `seq` of the room as it is now (from memory, else the
        transcript; in Redis mode the stream first, so a Deferred). One the session may not
        see (a note, for a customer) is not found: its existence is not told either."""
        event = room.find(seq)
        if event is None and seq <= room.committed_seq:
            lines = self._server.events_before(room, seq + 1, 1)
            if isinstance(lines, Deferred):
                return lines.addCallback(self._found, room, seq, session, ref)
            return self._found(lines, room, seq, session, ref)
        return self._found([event.line] if event is not None else [], room, seq, session, ref)

    @staticmethod
    def _found(lines: list[bytes], room: Room, seq: int, session, ref: str) -> Event:
        event = Event.from_line(lines[0]) if lines else None
        if (
            event is None
            or event.seq != seq
            or event.kind not in TEXT_KINDS
            or not event.visible_to(session.roles)
        ):
            raise ChatError(errors.NOT_FOUND, f"there is no message {seq} in {room.name!r}", ref)
        return event

    @staticmethod
    def _then(found: Event | Deferred, carry_on):
        """`carry_on(target)` at once, or once the target is read (Redis mode)."""
        if isinstance(found, Deferred):
            return found.addCallback(carry_on)
        return carry_on(found)

    def edit(self, session, request: wire.Edit) -> Deferred | None:
        server = self._server
        room = server.joined_room(session, request.room)
        server.directory.check_may_post(session, room)
        now = server.now()
        if room.seq_of_retry(session.user, request.id, now) is not None:
            self._post(room, "edit", session, request, {"target": request.seq})
            return None  # a retry: acknowledged with the seq it already has
        found = self._target(room, request.seq, session, request.id)
        return self._then(found, lambda target: self._edit(target, room, session, request, now))

    def _edit(self, target: Event, room: Room, session, request: wire.Edit, now: float) -> None:
        if target.sender != session.user:
            raise ChatError(errors.FORBIDDEN, "only its author may edit a message", request.id)
        if target.record.get("redacted"):
            raise ChatError(errors.NOT_FOUND, f"message {request.seq} was deleted", request.id)
        if now - target.ts > self.config.edit_window:
            raise ChatError(
                errors.EDIT_WINDOW_PASSED,
                f"messages can be edited for {self.config.edit_window:g}s after they are sent",
                request.id,
            )
        revise = edit(room.epoch, target.seq, request.text, now)
        directory = self._server.store.directory
        done = self._rewrite(
            room.name, lambda: files_from(directory, room.name, target.seq, target.ts), revise
        )

        def revised(_outcome):
            self._revise_memory(room, revise, [target.seq])
            fields = {"target": request.seq, "text": request.text}
            self._post(room, "edit", session, request, fields, now, target.audience)

        done.addCallbacks(revised, self._failed, errbackArgs=(session, request, room))

    def delete(self, session, request: wire.Delete) -> Deferred | None:
        server = self._server
        room = server.directory.visible(session, request.room)
        if room.seq_of_retry(session.user, request.id, server.now()) is not None:
            self._post(room, "delete", session, request, {"target": request.seq})
            return None
        found = self._target(room, request.seq, session, request.id)
        return self._then(found, lambda target: self._delete(target, room, session, request))

    def _delete(self, target: Event, room: Room, session, request: wire.Delete) -> None:
        server = self._server
        fields = {"target": request.seq}
        if target.sender != session.user and not self.is_moderator(session, room.name):
            raise ChatError(
                errors.FORBIDDEN,
                "only its author or a moderator may delete a message",
                request.id,
            )
        revise = redact(room.epoch, target.seq)
        directory = server.store.directory
        until = target.ts + self.config.edit_window + EDIT_MARGIN
        done = self._rewrite(
            room.name, lambda: files_from(directory, room.name, target.seq, until), revise
        )

        def redacted(outcome):
            self._revise_memory(room, revise, None)
            self._log.info(
                "{user} deleted message {seq} of {author} in {room}: {changed} line(s) of"
                " {files} redacted",
                user=session.user,
                seq=target.seq,
                author=target.sender,
                room=room.name,
                changed=outcome.changed,
                files=", ".join(outcome.files) or "no file",
            )
            self._post(room, "delete", session, request, fields, audience=target.audience)

        done.addCallbacks(redacted, self._failed, errbackArgs=(session, request, room))

    def _rewrite(self, room: str, choose, revise) -> Deferred:
        """Rewrite the room's transcript files; in Redis mode the archiver does, as it writes
        the event (an `Outcome` of nothing here)."""
        if self.shared is not None:
            return succeed(Outcome())
        return self.editor.rewrite(room, choose, revise)

    def revise_snapshot(self, room: Room) -> None:
        """A room just taken on from Redis: the edits and deletions among its latest events
        apply to the events before them (the stream keeps the lines as they were sent)."""
        self._apply_revisions(room, room.events())

    def _apply_revisions(self, room: Room, events) -> None:
        for event in events:
            revision = revision_of(event)
            if revision is not None:
                self._revise_memory(room, revision[0], None)

    def _revise_memory(self, room: Room, revise, seqs: list[int] | None) -> None:
        """Apply `revise` to the room's events in memory (those of `seqs`, or all)."""
        events = room.events() if seqs is None else filter(None, map(room.find, seqs))
        for event in events:
            line = revise(event.line)
            if line is not event.line and line is not None:
                room.revise(Event.from_line(line))

    def _post(self, room, kind, session, request, fields, now=None, audience=None) -> None:
        """Post an edit or delete event; it has its target's audience (an edit of a note
        carries the note's new text)."""
        server = self._server
        record = {"from": session.user, "name": session.name, "id": request.id, **fields}
        draft = Draft(kind, record, session.user, now or server.now(), request.id, audience)
        server.post(room, draft, ack_to=session)

    def _failed(self, failure, session, request, room) -> None:
        self._log.failure(
            "could not rewrite the transcript of {room} for {user}'s {kind}",
            failure,
            room=room.name,
            user=session.user,
            kind=request.type,
        )
        if session.connection is not None:
            message = "the transcript could not be rewritten; retry later"
            session.connection.send(wire.error(errors.UNAVAILABLE, message, request.id))

    # -- kick, ban, mute -----------------------------------------------------------------------

    def sanction(self, session, request: wire.Sanction) -> None:
        server = self._server
        room = server.directory.visible(session, request.room)
        if not self.is_moderator(session, room.name):
            message = f"only moderators may {request.type} in {room.name!r}"
            raise ChatError(errors.FORBIDDEN, message, request.ref)
        now = server.now()
        fields = {"from": session.user, "name": session.name, "user": request.user}
        if request.duration is not None:
            until = now + request.duration if request.duration > 0 else None
            key = self._key(request.user)
            self.sanctions.set(room.name, key, request.type, until, now)
            if self.shared is not None:
                self.shared.store(room.name, key, self.sanctions.rooms.get(room.name, {}).get(key))
            fields["duration"] = request.duration
            fields["until"] = format_ts(until) if until is not None else None
        if request.ref is not None:
            fields["id"] = request.ref
        draft = Draft(request.type, fields, session.user, now, request.ref)
        server.post(room, draft, ack_to=session if request.ref else None)
        self._log.info(
            "{moderator} {kind} {user} in {room} ({duration})",
            moderator=session.user,
            kind=request.type,
            user=request.user,
            room=room.name,
            duration="lifted" if request.duration == 0 else f"{request.duration or 0:g}s",
        )
        if request.type == "kick" or (request.type == "ban" and request.duration):
            self._remove(room, request.user, session.user, request.type)

    # -- Redis mode: what other nodes did ------------------------------------------------------

    def adopt(self, room: str, stored: dict[str, str]) -> None:
        """A room taken on from Redis: its sanctions in force, as Redis has them (user key ->
        JSON of its kinds and times)."""
        users = {}
        for user_key, value in stored.items():
            try:
                kinds = json.loads(value)
                users[user_key] = {kind: float(until) for kind, until in kinds.items()}
            except (ValueError, TypeError, AttributeError):
                self._log.error(
                    "unreadable sanctions in Redis for room {room}: {value!r}",
                    room=room,
                    value=value[:80],
                )
        if users or room in self.sanctions.rooms:
            self.sanctions.rooms[room] = users
            self.sanctions.prune(self._server.now())

    def follow(self, room: Room, events: list[Event]) -> None:
        """A pipeline observer (Redis mode): the sanctions any node imposed in the room hold
        here too, and this node's sessions of a kicked or banned user leave it; edits and
        deletions revise the events in memory."""
        now = self._server.now()
        self._apply_revisions(room, events)
        for event in events:
            if event.kind not in ("kick", "ban", "mute"):
                continue
            record = event.record
            user = record.get("user")
            if not isinstance(user, str):
                continue
            if "duration" in record:
                until = parse_ts(record["until"]) if record.get("until") else None
                key = self._key(user)
                if self.sanctions.until(room.name, key, event.kind, now) != until:
                    self.sanctions.set(room.name, key, event.kind, until, now)
            if event.kind == "kick" or (event.kind == "ban" and record.get("duration")):
                self._remove(room, user, record.get("from", ""), event.kind)

    def _remove(self, room: Room, user: str, by: str, why: str) -> None:
        """Every session of `user` leaves the room (one `leave` event), and is told why."""
        server = self._server
        leaving = [s for s in server.sessions.of_user(user) if room.name in s.rooms]
        for session in leaving:
            session.rooms.discard(room.name)
            if room.remove(session):
                server.post(room, presence_draft(session.user, session.name, "leave", server.now()))
            if session.connection is not None:
                session.connection.send(
                    wire.encode(
                        {"type": "left", "room": room.name, "ref": None, "reason": why, "by": by}
                    )
                )
        server.directory.touch(room)
