"""Who a connection is: the identity a `hello` establishes.

`open` mode trusts the name a client picks (for local trial and closed networks). `token`
mode requires a JWT signed by the operator's identity provider (or `chatd token`), verified
by PyJWT: `sub` is the user id, `name` the display name, `roles` a list of role names.
Tokens are never logged, echoed or written to transcripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jwt

from chatd import errors, wire
from chatd.config import AuthConfig, ConfigError
from chatd.errors import ChatError
from chatd.names import USER_ID

MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class Identity:
    user: str
    display_name: str
    roles: frozenset[str]
    expires_at: float | None = None  # the token's exp plus the leeway; None: never
    token_id: str | None = None  # the token's jti, if it has one
    # A user secret the authenticator has proved (an anonymous visitor's, chatd/visitors.py):
    # the session registry hands it out in welcome instead of one of its own.
    secret: str | None = None


# Every session keeps its user's roles, and an empty frozenset is a new 216-byte object each
# time: sessions share one frozenset per distinct set of roles instead (a few hundred at most
# are kept; tokens come from the site's backend, not from clients).
NO_ROLES: frozenset[str] = frozenset()
_ROLE_SETS: dict[frozenset[str], frozenset[str]] = {NO_ROLES: NO_ROLES}
MAX_SHARED_ROLE_SETS = 512


def role_set(roles) -> frozenset[str]:
    """`roles` as a frozenset, the one every session with these roles shares."""
    roles = frozenset(roles)
    shared = _ROLE_SETS.get(roles)
    if shared is not None:
        return shared
    if len(_ROLE_SETS) < MAX_SHARED_ROLE_SETS:
        _ROLE_SETS[roles] = roles
    return roles


class OpenAuthenticator:
    """Anyone may be anyone: the name in `hello` is the user id.

    `trial_roles` gives roles to chosen names ([support] trial_agents): for local trial only.
    """

    def __init__(self, trial_roles: dict[str, frozenset[str]] | None = None):
        self._trial_roles = {
            name.casefold(): role_set(roles) for name, roles in (trial_roles or {}).items()
        }

    def identify(self, hello: wire.Hello) -> Identity:
        if hello.name is None:
            raise ChatError(errors.BAD_FRAME, "hello needs a 'name'")
        roles = self._trial_roles.get(hello.name.casefold(), NO_ROLES)
        return Identity(hello.name, hello.name, roles)


class TokenAuthenticator:
    """`hello` must carry a valid JWT; its claims are the identity."""

    def __init__(self, config: AuthConfig, source: str):
        self._config = config
        self._key = load_verification_key(config, source)

    def identify(self, hello: wire.Hello) -> Identity:
        if hello.token is None:
            raise ChatError(errors.AUTH_FAILED, "this server requires a 'token' in hello")
        return self.verify(hello.token)

    def verify(self, token: str) -> Identity:
        """The identity a token proves (in `hello`, or in `refresh`)."""
        config = self._config
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[config.algorithm],
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": config.audience is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise ChatError(errors.TOKEN_EXPIRED, "the token has expired") from None
        except jwt.InvalidTokenError as error:
            # PyJWT's messages describe the claim or signature, never the token itself.
            raise ChatError(errors.AUTH_FAILED, f"the token was refused: {error}") from None
        return _identity_from(claims, config.leeway)


def _identity_from(claims: dict, leeway: float) -> Identity:
    user = claims["sub"]
    if not isinstance(user, str) or not USER_ID.fullmatch(user):
        raise ChatError(errors.AUTH_FAILED, "the token's sub is not a valid user id")
    display_name = claims.get("name", user)
    if not isinstance(display_name, str) or not 0 < len(display_name) <= 64:
        raise ChatError(errors.AUTH_FAILED, "the token's name must be a string of 1-64 characters")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(
        isinstance(role, str) and USER_ID.fullmatch(role) for role in roles
    ):
        raise ChatError(errors.AUTH_FAILED, "the token's roles must be a list of role names")
    token_id = claims.get("jti")
    if token_id is not None and not (isinstance(token_id, str) and 0 < len(token_id) <= 128):
        raise ChatError(errors.AUTH_FAILED, "the token's jti must be a string of 1-128 characters")
    return Identity(user, display_name, role_set(roles), claims["exp"] + leeway, token_id)


class Revocations:
    """`[auth] revoked_file`: token ids (`jti`) and user ids that may not be connected.

    One entry per line; `#` starts a comment. Read at start and again on SIGHUP. An entry
    matches a token's `jti` or a user id (compared exactly).
    """

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: frozenset[str] = frozenset()

    def load(self) -> frozenset[str]:
        """Read the file again; returns the entries it added. Raises OSError if unreadable."""
        if self.path is None:
            return frozenset()
        text = self.path.read_text(encoding="utf-8")
        entries = frozenset(
            word for line in text.splitlines() if (word := line.split("#", 1)[0].strip())
        )
        added = entries - self.entries
        self.entries = entries
        return added

    def revokes(self, user: str, token_id: str | None) -> bool:
        return user in self.entries or (token_id is not None and token_id in self.entries)


def load_verification_key(config: AuthConfig, source: str):
    if config.algorithm == "HS256":
        secret = config.secret_file.read_bytes().strip()
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(
                source, "auth", "secret_file", f"holds fewer than {MIN_SECRET_BYTES} bytes"
            )
        return secret
    key = config.public_key_file.read_bytes()
    try:
        jwt.get_algorithm_by_name(config.algorithm).prepare_key(key)
    except (ValueError, TypeError, jwt.InvalidKeyError) as error:
        raise ConfigError(
            source, "auth", "public_key_file", f"not a PEM {config.algorithm} public key ({error})"
        ) from None
    return key


def authenticator_for(config: AuthConfig, source: str, trial_roles=None):
    if config.mode == "token":
        return TokenAuthenticator(config, source)
    return OpenAuthenticator(trial_roles)


def mint_token(
    config: AuthConfig,
    user: str,
    *,
    roles: list[str],
    ttl: float,
    now: float,
    name: str | None = None,
    signing_key: bytes | None = None,
    token_id: str | None = None,
) -> str:
    """A token this server accepts (for operators and tests). RS256/ES256 need the private
    `signing_key`; HS256 signs with the configured secret."""
    claims = {"sub": user, "roles": roles, "iat": int(now), "exp": int(now + ttl)}
    if name is not None:
        claims["name"] = name
    if token_id is not None:
        claims["jti"] = token_id
    if config.audience is not None:
        claims["aud"] = config.audience
    if config.issuer is not None:
        claims["iss"] = config.issuer
    if config.algorithm == "HS256":
        signing_key = config.secret_file.read_bytes().strip()
    return jwt.encode(claims, signing_key, algorithm=config.algorithm)
