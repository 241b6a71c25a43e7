"""Users and their sessions: one user may be connected several times (tabs, devices).

A session is one welcomed connection. Its user is the identity `hello` proved: a token's `sub`,
or in open mode the name the client picked. Sessions are pure state: the server decides what a
hello may do, and this registry only counts, finds and hands over.

- In token mode every valid token for a user opens another session of that user.
- In open mode the first session of a name gets the user's secret; a further connection joins
  that user only by presenting it, so nobody becomes someone else by typing their name.
- Any session can be taken over at once by a new connection that presents its resume secret:
  the half-open connection a network switch left behind is replaced instead of holding the
  user's place until keepalive notices.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from chatd import errors
from chatd.auth import Identity
from chatd.config import ANYONE
from chatd.errors import ChatError


def new_secret() -> str:
    return secrets.token_urlsafe(18)


@dataclass(eq=False, slots=True, weakref_slot=True)
class Session:
    """A welcomed connection of a user, and the rooms it has joined."""

    id: str
    user: str  # the user id
    name: str  # the display name
    roles: frozenset[str]
    connection: Any
    resume_secret: str
    expires_at: float | None = None  # when the token (plus leeway) runs out; None: never
    token_id: str | None = None
    rooms: set[str] = field(default_factory=set)
    expiry_call: Any = None  # the clock's call that ends the session at `expires_at`

    @property
    def resume(self) -> str:
        """What the client presents to take this session over: its id and its secret."""
        return f"{self.id}.{self.resume_secret}"

    def may(self, allowed: tuple[str, ...]) -> bool:
        """True if `allowed` (role names, or "*") admits this user."""
        return ANYONE in allowed or not self.roles.isdisjoint(allowed)


@dataclass(eq=False, slots=True)
class User:
    key: str  # the registry's key: the user id, or its case-folded form in open mode
    secret: str  # open mode: what a further connection presents to join this user
    sessions: dict[str, Session] = field(default_factory=dict)  # by session id


@dataclass(frozen=True)
class Opened:
    """What `SessionRegistry.open` did: the session, and the connection it replaced (if any)."""

    session: Session
    replaced: Any = None
    user_secret: str | None = None


class SessionRegistry:
    def __init__(
        self,
        max_per_user: int,
        open_mode: bool,
        make_secret: Callable[[], str] = new_secret,
    ):
        self.max_per_user = max_per_user
        self.open_mode = open_mode
        self._make_secret = make_secret
        self._users: dict[str, User] = {}
        self._sessions: dict[str, Session] = {}

    def key_of(self, user: str) -> str:
        """Open-mode names are unique ignoring case; token subjects are compared exactly."""
        return user.casefold() if self.open_mode else user

    @property
    def user_count(self) -> int:
        return len(self._users)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def of_user(self, user: str) -> list[Session]:
        found = self._users.get(self.key_of(user))
        return [] if found is None else list(found.sessions.values())

    def open(
        self,
        connection,
        identity: Identity,
        *,
        secret: str | None = None,
        resume: str | None = None,
    ) -> Opened:
        """A new session for `identity` on `connection`, or an earlier one taken over."""
        key = self.key_of(identity.user)
        user = self._users.get(key)
        earlier = self._resumable(user, resume)
        if earlier is not None:
            replaced = earlier.connection
            earlier.connection = connection
            earlier.resume_secret = self._make_secret()
            _refresh(earlier, identity)
            return Opened(earlier, replaced, self._secret_for(user, identity))
        if user is not None and user.sessions:
            proved = identity.secret is not None or (
                secret and hmac.compare_digest(secret, user.secret)
            )
            if self.open_mode and not proved:
                raise ChatError(errors.NAME_TAKEN, f"the name {identity.user!r} is in use")
            if len(user.sessions) >= self.max_per_user:
                raise ChatError(
                    errors.TOO_MANY_SESSIONS,
                    f"{identity.user} already has {self.max_per_user} sessions; close one,"
                    " or resume it",
                )
        if user is None:
            user = self._users[key] = User(key, identity.secret or self._make_secret())
        elif user.sessions and self.open_mode:
            # The name as its first session spelled it: `aLICE` joining `Alice` is Alice.
            first = _first(user)
            identity = replace(identity, user=first.user, display_name=first.name)
        session = Session(
            id=self._make_secret(),
            user=identity.user,
            name=identity.display_name,
            roles=identity.roles,
            connection=connection,
            resume_secret=self._make_secret(),
        )
        _refresh(session, identity)
        user.sessions[session.id] = session
        self._sessions[session.id] = session
        return Opened(session, None, self._secret_for(user, identity))

    def _secret_for(self, user: User, identity: Identity) -> str | None:
        """The user secret welcome carries: open mode's, or the one the identity proved."""
        return user.secret if self.open_mode or identity.secret is not None else None

    def resumable(self, user: str, resume: str | None) -> Session | None:
        """The session of `user` that `resume` would take over, if any."""
        return self._resumable(self._users.get(self.key_of(user)), resume)

    def _resumable(self, user: User | None, resume: str | None) -> Session | None:
        if user is None or not resume:
            return None
        session_id, _dot, secret = resume.partition(".")
        session = user.sessions.get(session_id)
        if session is None or not hmac.compare_digest(secret, session.resume_secret):
            return None
        return session

    def close(self, session: Session) -> bool:
        """End a session; True if it was its user's last."""
        if self._sessions.pop(session.id, None) is None:
            return False
        key = self.key_of(session.user)
        user = self._users[key]
        del user.sessions[session.id]
        if user.sessions:
            return False
        del self._users[key]
        return True

    def refresh(self, session: Session, identity: Identity) -> None:
        """A fresh token for the same user: its expiry (and roles and name) apply from now."""
        if self.key_of(identity.user) != self.key_of(session.user):
            raise ChatError(errors.AUTH_FAILED, "a refresh token must be for the same user")
        _refresh(session, identity)


def _first(user: User) -> Session:
    return next(iter(user.sessions.values()))


def _refresh(session: Session, identity: Identity) -> None:
    session.name = identity.display_name
    session.roles = identity.roles
    session.expires_at = identity.expires_at
    session.token_id = identity.token_id
