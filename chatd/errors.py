"""Every error a client can be told, and the one exception that carries it.

The codes are stable (docs/protocol.md lists each); the message is for people and may change.
The wire format, the authenticators and the rules of the server all raise `ChatError`; the
protocol turns it into an error frame. Close codes chatd chooses itself are here too.
"""

from __future__ import annotations

# -- error codes --------------------------------------------------------------------------------

BAD_JSON = "bad_json"
BAD_FRAME = "bad_frame"
UNKNOWN_TYPE = "unknown_type"
HELLO_REQUIRED = "hello_required"
ALREADY_WELCOMED = "already_welcomed"
BAD_NAME = "bad_name"
NAME_TAKEN = "name_taken"
TOO_MANY_SESSIONS = "too_many_sessions"
BAD_ROOM = "bad_room"
BAD_TEXT = "bad_text"
TEXT_TOO_LONG = "text_too_long"
BAD_ID = "bad_id"
NOT_JOINED = "not_joined"
UNKNOWN_ROOM = "unknown_room"
UNAVAILABLE = "unavailable"
AUTH_FAILED = "auth_failed"
TOKEN_EXPIRED = "token_expired"
FORBIDDEN = "forbidden"
RATE_LIMITED = "rate_limited"
TOO_MANY_ROOMS = "too_many_rooms"
ROOM_BUDGET = "room_budget"
NOT_FOUND = "not_found"
EDIT_WINDOW_PASSED = "edit_window_passed"
CONFLICT = "conflict"

# -- close codes chatd chooses (4000-4999 are the application's, RFC 6455 7.4.2) -----------------

CLOSE_REPLACED = 4000  # another connection resumed this session
CLOSE_TOKEN_EXPIRED = 4001  # the token expired and no refresh came in time
CLOSE_REVOKED = 4003  # the token or the user was revoked ([auth] revoked_file)
CLOSE_DISCONNECTED = 4004  # the website's backend disconnected the user (server API)


class ChatError(Exception):
    """A request that cannot be served: answered with an error frame; the connection stays up.

    `ref` is the client's id of the frame it answers, when the frame had one.
    """

    def __init__(self, code: str, message: str, ref: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
