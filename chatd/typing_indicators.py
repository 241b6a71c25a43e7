"""Typing indicators: who is typing in which room, told to the others and never recorded.

Attached to the server from outside, as moderation is: a request handler (`typing`), the
`say` handler wrapped (a message ends its sender's indicator), a pipeline observer (a user
whose last session left the room stops typing there) and a shutdown hook.

An indicator is per user per room, whichever of the user's sessions sent it, as Synapse keeps
it. It starts with `typing: true` (the others get one `typing` frame), is renewed by more of
them (no frame: only its timer starts again) and ends with `typing: false`, with a message
from its user in the room, with its user leaving the room (the last session, as presence
counts it), or by itself after `[rooms] typing_timeout` without renewal. Each end sends one
`typing: false` frame.

Nothing here is written to a transcript or has a seq: an indicator lost in a restart ends on
the clients' side, whose indicators time out like ours. Each indicator holds one timer on the
server's clock; ending it cancels the timer. An indicator whose user left while the leave
could not be recorded ends with its timer (a room cannot leave memory with members in it).

Frames are encoded once per change and framed once for all the receivers, with the pipeline's
`prepare` (so `[limits] compression` applies to them too); they go to every session in the
room but the typer's own (a client need not be told that its own user types).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatd import wire
from chatd.events import Event
from chatd.rooms import Room


@dataclass(slots=True)
class Indicator:
    """One user typing in one room: the display name the others were shown, and the timer
    that ends it."""

    name: str
    timer: Any  # the clock's IDelayedCall


class TypingIndicators:
    def __init__(self, timeout: float):
        self.timeout = timeout
        self._typing: dict[tuple[str, str], Indicator] = {}  # by (room, user)
        self._server = None

    def attach(self, server) -> None:
        self._server = server
        server.handlers["typing"] = self.typing
        say = server.handlers["say"]

        def say_and_stop_typing(session, request: wire.Say):
            reply = say(session, request)  # raises if the message is refused: still typing
            self.stop(server.directory.rooms[request.room], session.user)
            return reply

        server.handlers["say"] = say_and_stop_typing
        server.pipeline.observers.append(self.observe)
        server.on_shutdown.append(self.shutdown)

    # -- requests -----------------------------------------------------------------------------

    def typing(self, session, request: wire.Typing) -> None:
        server = self._server
        room = server.joined_room(session, request.room)
        if not request.typing:
            self.stop(room, session.user)
            return
        server.directory.check_may_post(session, room)  # no indicator from the muted
        key = (room.name, session.user)
        indicator = self._typing.get(key)
        if indicator is not None:
            indicator.timer.reset(self.timeout)
            return
        timer = server.clock.callLater(self.timeout, self._expired, key)
        self._typing[key] = Indicator(session.name, timer)
        self._tell(room, session.user, session.name, True)

    # -- ends ---------------------------------------------------------------------------------

    def stop(self, room: Room, user: str) -> None:
        """End `user`'s indicator in `room`, if there is one: the others are told at once (a
        message that ends it is delivered at the end of the turn, so after this)."""
        indicator = self._typing.pop((room.name, user), None)
        if indicator is None:
            return
        if indicator.timer.active():
            indicator.timer.cancel()
        self._tell(room, user, indicator.name, False)

    def observe(self, room: Room, events: list[Event]) -> None:
        """A committed `presence` event of a user who is no member now: the user left."""
        if not self._typing:
            return
        for event in events:
            if (
                event.kind == "presence"
                and event.sender is not None
                and event.sender not in room.members
            ):
                self.stop(room, event.sender)

    def _expired(self, key: tuple[str, str]) -> None:
        indicator = self._typing.pop(key)
        room = self._server.directory.rooms.get(key[0])
        if room is not None:
            self._tell(room, key[1], indicator.name, False)

    def shutdown(self) -> None:
        for indicator in self._typing.values():
            if indicator.timer.active():
                indicator.timer.cancel()
        self._typing.clear()

    # -- fan-out ------------------------------------------------------------------------------

    def _tell(self, room: Room, user: str, name: str, is_typing: bool) -> None:
        frame = wire.typing(room.name, user, name, is_typing)
        self._server.pipeline.tell_room(room, [frame], skip_user=user)
