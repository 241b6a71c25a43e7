"""Anonymous visitors (`[support] visitors = anonymous`): identities chatd gives out itself.

A website's chat widget has no token for a visitor who never signed in. Such a page says
`{"type": "hello", "visitor": true}` and is given a fresh random visitor id (`v-` and 16
base32 characters) and that id's secret; it keeps both in the browser's storage and comes back
with `{"type": "hello", "visitor": true, "name": <id>, "secret": <secret>}` as the same user,
with the same conversation room.

The secret is an HMAC of the id under a key of the daemon's (`visitor.key` in the transcript
directory, made once, 0600), so it is checked without remembering any visitor: it still works
after every tab closed and after a restart, which the in-memory user secrets of open mode
(chatd/sessions.py) do not. Deleting the key forgets every visitor at once.

A visitor identity never has a role, and an id outside the visitor grammar is never one: a
visitor can only come back as an id this daemon issued, never as an agent or another user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from chatd import errors, wire
from chatd.auth import NO_ROLES, Identity
from chatd.errors import ChatError

KEY_FILE = "visitor.key"
KEY_BYTES = 32
VISITOR_ID = re.compile(r"v-[a-z2-7]{16}")
_SECRET_CONTEXT = b"chatd visitor secret\x00"


def new_visitor_id() -> str:
    """`v-` and 80 random bits in lower-case base32: a user id (chatd/names.py) and a plain
    support room name (`support-v-…`)."""
    return "v-" + base64.b32encode(secrets.token_bytes(10)).decode().lower()


def load_or_create_key(directory: Path) -> bytes:
    """The daemon's visitor key, made on first use (0600, never rewritten). Written aside and
    linked into place, so that nodes starting at once on one directory (Redis mode) never read
    a key half written: the first link wins and every node reads that one."""
    path = directory / KEY_FILE
    if not path.exists():
        aside = directory / f".{KEY_FILE}.{secrets.token_hex(8)}"
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # another node's came first
        finally:
            os.unlink(aside)
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise ValueError(f"{path} holds fewer than {KEY_BYTES} bytes")
    return key


class Visitors:
    """Issues visitor identities and checks a returning visitor's secret, statelessly."""

    def __init__(self, key: bytes, make_id: Callable[[], str] = new_visitor_id):
        self._key = key
        self._make_id = make_id

    def secret_of(self, user: str) -> str:
        digest = hmac.new(self._key, _SECRET_CONTEXT + user.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def identify(self, hello: wire.Hello) -> Identity:
        """A fresh visitor (no name), or a returning one (the id and its secret)."""
        if hello.name is None:
            user = self._make_id()
            return Identity(user, user, NO_ROLES, secret=self.secret_of(user))
        if not VISITOR_ID.fullmatch(hello.name):
            raise ChatError(errors.AUTH_FAILED, f"{hello.name!r} is not a visitor id")
        expected = self.secret_of(hello.name)
        if not (hello.secret and hmac.compare_digest(hello.secret, expected)):
            raise ChatError(errors.AUTH_FAILED, "this is not the visitor's secret")
        return Identity(hello.name, hello.name, NO_ROLES, secret=expected)


class VisitorGate:
    """The authenticator the listeners use: a visitor hello (without a token) goes to the
    visitors when they are allowed, and is refused otherwise; every other hello goes to the
    configured authenticator (open names or tokens), and in open mode no name may look like
    a visitor id, so nobody takes a visitor's place by typing it."""

    def __init__(self, authenticator, visitors: Visitors | None):
        self._authenticator = authenticator
        self._visitors = visitors
        # `refresh` is offered exactly when the configured authenticator verifies tokens
        # (protocol.py asks for `verify`).
        if hasattr(authenticator, "verify"):
            self.verify = authenticator.verify

    def identify(self, hello: wire.Hello) -> Identity:
        if hello.visitor and hello.token is None:
            if self._visitors is None:
                raise ChatError(
                    errors.AUTH_FAILED,
                    "this server does not take anonymous visitors ([support] visitors = token):"
                    " sign in with a token",
                )
            return self._visitors.identify(hello)
        if (
            self._visitors is not None
            and hello.token is None
            and hello.name is not None
            and VISITOR_ID.fullmatch(hello.name.lower())
        ):
            raise ChatError(errors.BAD_NAME, "names like v-… are kept for anonymous visitors")
        return self._authenticator.identify(hello)
