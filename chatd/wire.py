"""The JSON wire format: client frames parsed into typed values, server frames built as bytes.

Nothing a client sends is trusted: every field is type-checked and matched against a grammar
before it reaches the server, and every failure is a `ChatError` with a stable code
(chatd/errors.py, docs/protocol.md). Server frames are encoded here, once, as compact UTF-8 JSON.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import ClassVar

from chatd import names
from chatd.errors import (
    BAD_FRAME,
    BAD_ID,
    BAD_JSON,
    BAD_NAME,
    BAD_ROOM,
    BAD_TEXT,
    TEXT_TOO_LONG,
    UNKNOWN_TYPE,
    ChatError,
)

# C0 and C1 controls except tab and newline, and lone surrogates (which \\ud800 escapes
# in JSON can smuggle in, and which cannot be written back out as UTF-8).
_FORBIDDEN_IN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# Letters and marks that render as nothing: Hangul fillers, the Braille blank, the combining
# grapheme joiner, Khmer's invisible vowels and the variation selectors. With whitespace and
# the format characters (Unicode category Cf: zero-width space, BOM, joiners, bidi marks...)
# a text of nothing but these is blank.
_INVISIBLE = frozenset(
    "\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5"
    + "".join(map(chr, range(0xFE00, 0xFE10)))
    + "".join(map(chr, range(0xE0100, 0xE01F0)))
)
_MAX_SEQ = 2**53 - 1  # the largest integer every JSON client can represent exactly
MAX_TOKEN_CHARS = 8192
MAX_SECRET_CHARS = 128
MAX_DISPLAY_NAME_CHARS = 64
MAX_EMAIL_CHARS = 254  # RFC 5321's limit on a path, less its angle brackets
# The HTML standard's "valid e-mail address", with a dot required in the domain.
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
QUEUE_STATUSES = ("all", "open", "resolved")
QUEUE_VIEWS = ("all", "mine", "unassigned")
AVAILABILITIES = ("online", "away")


@dataclass(frozen=True, slots=True)
class Since:
    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class Hello:
    type: ClassVar[str] = "hello"
    name: str | None
    ref: str | None
    token: str | None = None
    secret: str | None = None  # open mode: the user's secret, to join its sessions
    resume: str | None = None  # a session's resume secret, to take that session over
    visitor: bool = False  # an anonymous visitor (chatd/visitors.py); `name` when returning


@dataclass(frozen=True, slots=True)
class Refresh:
    type: ClassVar[str] = "refresh"
    token: str
    ref: str | None


@dataclass(frozen=True, slots=True)
class Join:
    type: ClassVar[str] = "join"
    room: str
    since: Since | None
    ref: str | None


@dataclass(frozen=True, slots=True)
class Leave:
    type: ClassVar[str] = "leave"
    room: str
    ref: str | None


@dataclass(frozen=True, slots=True)
class Say:
    type: ClassVar[str] = "say"
    room: str
    text: str
    id: str

    @property
    def ref(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True)
class Note:
    """An agent's internal note in a support conversation: a `say` only agents receive."""

    type: ClassVar[str] = "note"
    room: str
    text: str
    id: str

    @property
    def ref(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True)
class Who:
    type: ClassVar[str] = "who"
    room: str
    ref: str | None


@dataclass(frozen=True, slots=True)
class History:
    type: ClassVar[str] = "history"
    room: str
    before: int | None
    limit: int | None
    ref: str | None


@dataclass(frozen=True, slots=True)
class Queue:
    type: ClassVar[str] = "queue"
    ref: str | None
    status: str = "all"
    limit: int | None = None
    before: str | None = None  # the `next` cursor of the previous page
    view: str = "all"  # whose conversations: all, mine, unassigned


@dataclass(frozen=True, slots=True)
class Resolve:
    type: ClassVar[str] = "resolve"
    room: str
    ref: str | None


@dataclass(frozen=True, slots=True)
class Assign:
    type: ClassVar[str] = "assign"
    room: str
    agent: str | None  # None: the requesting agent
    ref: str | None


@dataclass(frozen=True, slots=True)
class Transfer:
    type: ClassVar[str] = "transfer"
    room: str
    agent: str | None  # None: back to nobody
    ref: str | None


@dataclass(frozen=True, slots=True)
class Rate:
    type: ClassVar[str] = "rate"
    room: str
    score: int  # 1-5
    comment: str | None
    ref: str | None


@dataclass(frozen=True, slots=True)
class Profile:
    """A customer's name and email for the agents (either may be left out, not both)."""

    type: ClassVar[str] = "profile"
    name: str | None
    email: str | None
    ref: str | None


@dataclass(frozen=True, slots=True)
class Availability:
    type: ClassVar[str] = "availability"
    status: str
    ref: str | None


@dataclass(frozen=True, slots=True)
class Edit:
    """The author replaces the text of message `seq` (within `[rooms] edit_window`)."""

    type: ClassVar[str] = "edit"
    room: str
    seq: int
    text: str
    id: str

    @property
    def ref(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True)
class Delete:
    """The author or a moderator deletes message `seq`: its text is redacted everywhere."""

    type: ClassVar[str] = "delete"
    room: str
    seq: int
    id: str

    @property
    def ref(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True)
class Sanction:
    """A moderator's `kick`, `ban` or `mute` of `user` in `room`; `duration` in seconds (0
    lifts a ban or mute; None for a kick)."""

    type: str
    room: str
    user: str
    duration: float | None
    ref: str | None


@dataclass(frozen=True, slots=True)
class Typing:
    """A member starts (`typing` true, renewed every few seconds) or stops typing in `room`."""

    type: ClassVar[str] = "typing"
    room: str
    typing: bool
    ref: str | None


@dataclass(frozen=True, slots=True)
class Read:
    """The user has read `room` up to and including event `seq`."""

    type: ClassVar[str] = "read"
    room: str
    seq: int
    ref: str | None


MAX_SANCTION_SECONDS = 10 * 366 * 86400
ClientFrame = Hello | Refresh | Join | Leave | Say | Who | History | Queue | Resolve
ClientFrame = ClientFrame | Edit | Delete | Sanction | Note | Typing | Read
ClientFrame = ClientFrame | Assign | Transfer | Availability | Rate | Profile


class FrameParser:
    """Turns one text message into a `ClientFrame`, or raises `ChatError`."""

    def __init__(self, max_text_chars: int):
        self.max_text_chars = max_text_chars
        self._parsers = {
            "hello": self._hello,
            "refresh": self._refresh,
            "join": self._join,
            "leave": self._leave,
            "say": self._say,
            "note": self._note,
            "who": self._who,
            "history": self._history,
            "queue": self._queue,
            "resolve": self._resolve,
            "assign": self._assign,
            "transfer": self._transfer,
            "availability": self._availability,
            "rate": self._rate,
            "profile": self._profile,
            "edit": self._edit,
            "delete": self._delete,
            "kick": self._sanction,
            "ban": self._sanction,
            "mute": self._sanction,
            "typing": self._typing,
            "read": self._read,
        }

    def parse(self, payload: bytes) -> ClientFrame:
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError):
            # ValueError covers JSONDecodeError and UnicodeDecodeError.
            raise ChatError(BAD_JSON, "the frame is not valid JSON") from None
        if not isinstance(obj, dict):
            raise ChatError(BAD_FRAME, "a frame must be a JSON object")
        ref = _ref_of(obj)
        kind = obj.get("type")
        if not isinstance(kind, str):
            raise ChatError(BAD_FRAME, "the frame has no string field 'type'", ref)
        parse = self._parsers.get(kind)
        if parse is None:
            raise ChatError(UNKNOWN_TYPE, f"unknown frame type {kind[:32]!r}", ref)
        return parse(obj, ref)

    def _hello(self, obj: dict, ref: str | None) -> Hello:
        """`name` (open mode) and/or `token` (token mode), or `visitor: true` (an anonymous
        visitor, with the `name` and `secret` it was given when it returns); the
        authenticator picks."""
        visitor = _field(obj, "visitor", bool, ref) if "visitor" in obj else False
        if "name" not in obj and "token" not in obj and not visitor:
            raise ChatError(BAD_FRAME, "hello needs a 'name' (or a 'token')", ref)
        name = _field(obj, "name", str, ref) if "name" in obj else None
        if name is not None and not names.USER_ID.fullmatch(name):
            raise ChatError(BAD_NAME, names.USER_RULE, ref)
        token = _token(obj, ref) if "token" in obj else None
        secret = _secret(obj, "secret", ref)
        resume = _secret(obj, "resume", ref)
        return Hello(name=name, ref=ref, token=token, secret=secret, resume=resume, visitor=visitor)

    def _refresh(self, obj: dict, ref: str | None) -> Refresh:
        return Refresh(token=_token(obj, ref), ref=ref)

    def _join(self, obj: dict, ref: str | None) -> Join:
        room = _room(obj, ref)
        since = obj.get("since")
        if since is None:
            return Join(room=room, since=None, ref=ref)
        if not isinstance(since, dict):
            raise ChatError(BAD_FRAME, "'since' must be an object {epoch, seq}", ref)
        epoch = _field(since, "epoch", str, ref, where="since.epoch")
        if not names.EPOCH.fullmatch(epoch):
            raise ChatError(BAD_FRAME, "'since.epoch' is not an epoch this server issues", ref)
        seq = _integer(since, "seq", ref, minimum=0, where="since.seq")
        return Join(room=room, since=Since(epoch=epoch, seq=seq), ref=ref)

    def _leave(self, obj: dict, ref: str | None) -> Leave:
        return Leave(room=_room(obj, ref), ref=ref)

    def _say(self, obj: dict, ref: str | None) -> Say:
        room = _room(obj, ref)
        if ref is None:
            raise ChatError(BAD_ID, "'say' needs a client 'id': 1-64 of A-Z a-z 0-9 _ . : -")
        return Say(room=room, text=self._text(obj, "text", ref), id=ref)

    def _text(self, obj: dict, key: str, ref: str | None) -> str:
        """Words people read (a message, a rating's comment): NFC, not blank, not too long."""
        text = _field(obj, key, str, ref)
        if _FORBIDDEN_IN_TEXT.search(text):
            raise ChatError(BAD_TEXT, f"{key} may not contain control characters", ref)
        text = unicodedata.normalize("NFC", text)
        if not text.strip():
            raise ChatError(BAD_TEXT, f"{key} is empty", ref)
        if len(text) > self.max_text_chars:
            raise ChatError(
                TEXT_TOO_LONG, f"{key} is longer than {self.max_text_chars} characters", ref
            )
        if _invisible(text):  # after the length check, which bounds this loop
            raise ChatError(BAD_TEXT, f"{key} is empty", ref)
        return text

    def _note(self, obj: dict, ref: str | None) -> Note:
        if ref is None:
            raise ChatError(BAD_ID, "'note' needs a client 'id': 1-64 of A-Z a-z 0-9 _ . : -")
        say = self._say(obj, ref)  # the same rules for a note's text as for a message's
        return Note(room=say.room, text=say.text, id=say.id)

    def _who(self, obj: dict, ref: str | None) -> Who:
        return Who(room=_room(obj, ref), ref=ref)

    def _history(self, obj: dict, ref: str | None) -> History:
        room = _room(obj, ref)
        before = _integer(obj, "before", ref, minimum=1) if "before" in obj else None
        limit = _integer(obj, "limit", ref, minimum=1) if "limit" in obj else None
        return History(room=room, before=before, limit=limit, ref=ref)

    def _queue(self, obj: dict, ref: str | None) -> Queue:
        status = _field(obj, "status", str, ref) if "status" in obj else "all"
        if status not in QUEUE_STATUSES:
            raise ChatError(BAD_FRAME, f"'status' must be one of {', '.join(QUEUE_STATUSES)}", ref)
        limit = _integer(obj, "limit", ref, minimum=1) if "limit" in obj else None
        before = _field(obj, "before", str, ref) if "before" in obj else None
        if before is not None and len(before) > 200:
            raise ChatError(BAD_FRAME, "'before' is not a cursor this server issued", ref)
        view = _field(obj, "view", str, ref) if "view" in obj else "all"
        if view not in QUEUE_VIEWS:
            raise ChatError(BAD_FRAME, f"'view' must be one of {', '.join(QUEUE_VIEWS)}", ref)
        return Queue(ref=ref, status=status, limit=limit, before=before, view=view)

    def _resolve(self, obj: dict, ref: str | None) -> Resolve:
        return Resolve(room=_room(obj, ref), ref=ref)

    def _assign(self, obj: dict, ref: str | None) -> Assign:
        return Assign(room=_room(obj, ref), agent=_agent(obj, ref), ref=ref)

    def _transfer(self, obj: dict, ref: str | None) -> Transfer:
        if "agent" not in obj:
            raise ChatError(BAD_FRAME, "'transfer' needs 'agent': a user id, or null", ref)
        return Transfer(room=_room(obj, ref), agent=_agent(obj, ref), ref=ref)

    def _rate(self, obj: dict, ref: str | None) -> Rate:
        room = _room(obj, ref)
        score = _integer(obj, "score", ref, minimum=1)
        if score > 5:
            raise ChatError(BAD_FRAME, "'score' must be 1 to 5", ref)
        comment = self._text(obj, "comment", ref) if obj.get("comment") is not None else None
        return Rate(room=room, score=score, comment=comment, ref=ref)

    def _profile(self, obj: dict, ref: str | None) -> Profile:
        name = self._display_name(obj, ref) if obj.get("name") is not None else None
        email = _email(obj, ref) if obj.get("email") is not None else None
        if name is None and email is None:
            raise ChatError(BAD_FRAME, "'profile' needs a 'name', an 'email' or both", ref)
        return Profile(name=name, email=email, ref=ref)

    def _display_name(self, obj: dict, ref: str | None) -> str:
        """A name others read: the rules of text, on one line, and as long as a token's name
        may be (chatd/auth.py)."""
        name = self._text(obj, "name", ref)
        if "\n" in name or "\t" in name:
            raise ChatError(BAD_NAME, "a name is one line", ref)
        if len(name) > MAX_DISPLAY_NAME_CHARS:
            raise ChatError(BAD_NAME, f"a name is at most {MAX_DISPLAY_NAME_CHARS} characters", ref)
        return name.strip()

    def _availability(self, obj: dict, ref: str | None) -> Availability:
        status = _field(obj, "status", str, ref)
        if status not in AVAILABILITIES:
            raise ChatError(BAD_FRAME, f"'status' must be one of {', '.join(AVAILABILITIES)}", ref)
        return Availability(status=status, ref=ref)

    def _edit(self, obj: dict, ref: str | None) -> Edit:
        say = self._say(obj, ref)  # the same rules for the new text as for a message's
        seq = _integer(obj, "seq", ref, minimum=1)
        return Edit(room=say.room, seq=seq, text=say.text, id=say.id)

    def _delete(self, obj: dict, ref: str | None) -> Delete:
        room = _room(obj, ref)
        if ref is None:
            raise ChatError(BAD_ID, "'delete' needs a client 'id': 1-64 of A-Z a-z 0-9 _ . : -")
        return Delete(room=room, seq=_integer(obj, "seq", ref, minimum=1), id=ref)

    def _sanction(self, obj: dict, ref: str | None) -> Sanction:
        room = _room(obj, ref)
        user = _field(obj, "user", str, ref)
        if not names.USER_ID.fullmatch(user):
            raise ChatError(BAD_NAME, "'user' is not a user id", ref)
        duration = None
        if obj["type"] != "kick":
            duration = obj.get("duration")
            if not isinstance(duration, int | float) or isinstance(duration, bool):
                raise ChatError(BAD_FRAME, "'duration' must be a number of seconds", ref)
            if not 0 <= duration <= MAX_SANCTION_SECONDS:
                raise ChatError(
                    BAD_FRAME, f"'duration' must be between 0 and {MAX_SANCTION_SECONDS}", ref
                )
        return Sanction(type=obj["type"], room=room, user=user, duration=duration, ref=ref)

    def _typing(self, obj: dict, ref: str | None) -> Typing:
        room = _room(obj, ref)
        return Typing(room=room, typing=_field(obj, "typing", bool, ref), ref=ref)

    def _read(self, obj: dict, ref: str | None) -> Read:
        return Read(room=_room(obj, ref), seq=_integer(obj, "seq", ref, minimum=0), ref=ref)


def _token(obj: dict, ref: str | None) -> str:
    token = _field(obj, "token", str, ref)
    if len(token) > MAX_TOKEN_CHARS:
        raise ChatError(BAD_FRAME, f"'token' is longer than {MAX_TOKEN_CHARS}", ref)
    return token


def _secret(obj: dict, key: str, ref: str | None) -> str | None:
    if key not in obj or obj[key] is None:
        return None
    value = _field(obj, key, str, ref)
    if len(value) > MAX_SECRET_CHARS:
        raise ChatError(BAD_FRAME, f"'{key}' is longer than {MAX_SECRET_CHARS}", ref)
    return value


def _email(obj: dict, ref: str | None) -> str:
    email = _field(obj, "email", str, ref).strip()
    if len(email) > MAX_EMAIL_CHARS or not _EMAIL.fullmatch(email):
        raise ChatError(BAD_FRAME, "'email' is not an email address like ann@example.com", ref)
    return email


def _agent(obj: dict, ref: str | None) -> str | None:
    """An optional user id in 'agent' (absent or null: none)."""
    agent = obj.get("agent")
    if agent is None:
        return None
    if not isinstance(agent, str) or not names.USER_ID.fullmatch(agent):
        raise ChatError(BAD_NAME, "'agent' is not a user id", ref)
    return agent


def _invisible(text: str) -> bool:
    """True if no character of `text` shows (stops at the first that does)."""
    return not any(
        not (char.isspace() or char in _INVISIBLE or unicodedata.category(char) == "Cf")
        for char in text
    )


def _ref_of(obj: dict) -> str | None:
    """The client's `id`, echoed as `ref` in replies; absent unless it is well-formed."""
    if "id" not in obj:
        return None
    value = obj["id"]
    if not isinstance(value, str) or not names.CLIENT_ID.fullmatch(value):
        raise ChatError(BAD_ID, "'id' must be 1-64 of A-Z a-z 0-9 _ . : -")
    return value


def _field(obj: dict, key: str, kind: type, ref: str | None, where: str | None = None):
    where = where or key
    if key not in obj:
        raise ChatError(BAD_FRAME, f"missing field '{where}'", ref)
    value = obj[key]
    if not isinstance(value, kind):
        raise ChatError(BAD_FRAME, f"'{where}' must be a {kind.__name__}", ref)
    return value


def _integer(obj: dict, key: str, ref: str | None, minimum: int, where: str | None = None) -> int:
    where = where or key
    value = obj.get(key)
    # bool is an int subclass in Python; true is not a sequence number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ChatError(BAD_FRAME, f"'{where}' must be an integer", ref)
    if not minimum <= value <= _MAX_SEQ:
        raise ChatError(BAD_FRAME, f"'{where}' must be between {minimum} and 2^53-1", ref)
    return value


def _room(obj: dict, ref: str | None) -> str:
    room = _field(obj, "room", str, ref)
    if not names.ROOM_NAME.fullmatch(room):
        raise ChatError(BAD_ROOM, names.ROOM_RULE, ref)
    return room


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode(obj: dict) -> bytes:
    """Compact UTF-8 JSON: the form of every server frame and every transcript line."""
    return _encode(obj).encode("utf-8")


def with_events(head: dict, key: str, lines: list[bytes]) -> bytes:
    """Encode `head` plus `key: [events]`, splicing in events that are already encoded."""
    return encode(head)[:-1] + b',"' + key.encode() + b'":[' + b",".join(lines) + b"]}"


def welcome(fields: dict) -> bytes:
    return encode({"type": "welcome", **fields})


def joined(
    room: str,
    epoch: str,
    seq: int,
    names: dict[str, str],
    history: list[bytes],
    recovered: bool,
    ref: str | None,
    extra: dict | None = None,
) -> bytes:
    """`members` lists the user ids, `names` maps each to the display name others see;
    `extra` holds the fields extensions add (the members' read markers)."""
    head = {
        "type": "joined",
        "room": room,
        "epoch": epoch,
        "seq": seq,
        "members": list(names),
        "names": names,
        "recovered": recovered,
        "ref": ref,
        **(extra or {}),
    }
    return with_events(head, "history", history)


def left(room: str, ref: str | None) -> bytes:
    return encode({"type": "left", "room": room, "ref": ref})


def members(room: str, names: dict[str, str], ref: str | None) -> bytes:
    frame = {"type": "members", "room": room, "members": list(names), "names": names, "ref": ref}
    return encode(frame)


def refreshed(expires_at: float | None, ref: str | None) -> bytes:
    return encode({"type": "refreshed", "expires": expires_at, "ref": ref})


def history(room: str, epoch: str, events: list[bytes], more: bool, ref: str | None) -> bytes:
    head = {"type": "history", "room": room, "epoch": epoch, "more": more, "ref": ref}
    return with_events(head, "events", events)


def typing(room: str, user: str, name: str, is_typing: bool) -> bytes:
    return encode({"type": "typing", "room": room, "user": user, "name": name, "typing": is_typing})


def read_marker(room: str, user: str, seq: int) -> bytes:
    return encode({"type": "read", "room": room, "user": user, "seq": seq})


def ack(client_id: str, seq: int) -> bytes:
    return encode({"type": "ack", "id": client_id, "seq": seq})


def error(code: str, message: str, ref: str | None) -> bytes:
    return encode({"type": "error", "code": code, "message": message, "ref": ref})
