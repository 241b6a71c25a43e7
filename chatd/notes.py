"""Internal notes: what support agents write in a conversation for each other, never for the
customer.

Attached from outside like the desk it belongs to: one request handler (`note`). A note is an
event of its own (`note`), posted like a message (seq, durability, ack after the write, retries
recognised by id), with the desk's agent role as its `audience`. Keeping it from everyone else
is not done here but by the core, for any event with an audience (events.Event.visible_to):
fan-out (pipeline.py), `joined` history and resume (rooms.py) and `history` pages from memory
or the transcripts (server.py, transcript.py). This module only decides who may write one,
where, and for whom it is.

The desk's queue follows messages only, so a note neither shows as a conversation's `last`
nor counts as an answer to the customer; neither does it for the `unattended` watch.
"""

from __future__ import annotations

from chatd import errors, wire
from chatd.errors import ChatError
from chatd.rooms import Draft
from chatd.support import SupportDesk, customer_of


class InternalNotes:
    def __init__(self, desk: SupportDesk):
        self.desk = desk
        self._server = None

    def attach(self, server) -> None:
        self._server = server
        server.handlers["note"] = self.note

    def note(self, session, request: wire.Note) -> None:
        """An agent's note in a conversation it has joined; acknowledged like a `say`."""
        if not self.desk.is_agent(session):
            raise ChatError(errors.FORBIDDEN, "only support agents may write notes", request.id)
        if customer_of(request.room) is None:
            raise ChatError(
                errors.FORBIDDEN, f"{request.room!r} is not a support conversation", request.id
            )
        server = self._server
        room = server.joined_room(session, request.room)
        server.directory.check_may_post(session, room)
        server.metrics.messages_in.inc()
        fields = {
            "from": session.user,
            "name": session.name,
            "id": request.id,
            "text": request.text,
        }
        draft = Draft(
            "note", fields, session.user, server.now(), request.id, audience=self.desk.agent_role
        )
        server.post(room, draft, ack_to=session)
