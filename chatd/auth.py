"""Who a connection is: the identity a `hello` establishes.

`open` mode trusts the name a client picks (for local trial and closed networks). `token`
mode requires a JWT signed by the operator's identity provider (or `chatd token`), verified
by PyJWT: `sub` is the user id, `name` the display name, `roles` a list of role names.
Tokens are never logged, echoed or written to transcripts.
"""

from __future__ import annotations

from dataclasses import dataclass

import jwt

from chatd import wire
from chatd.config import AuthConfig, ConfigError
from chatd.errors import Refused

MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class Identity:
    user: str
    display_name: str
    roles: frozenset[str]


class OpenAuthenticator:
    """Anyone may be anyone: the name in `hello` is the user id.

    `trial_roles` gives roles to chosen names ([support] trial_agents): for local trial only.
    """

    def __init__(self, trial_roles: dict[str, frozenset[str]] | None = None):
        self._trial_roles = {name.casefold(): roles for name, roles in (trial_roles or {}).items()}

    def identify(self, hello: wire.Hello) -> Identity:
        if hello.name is None:
            raise Refused(wire.BAD_FRAME, "hello needs a 'name'")
        roles = self._trial_roles.get(hello.name.casefold(), frozenset())
        return Identity(hello.name, hello.name, roles)


class TokenAuthenticator:
    """`hello` must carry a valid JWT; its claims are the identity."""

    def __init__(self, config: AuthConfig, source: str):
        self._config = config
        self._key = load_verification_key(config, source)

    def identify(self, hello: wire.Hello) -> Identity:
        if hello.token is None:
            raise Refused(wire.AUTH_FAILED, "this server requires a 'token' in hello")
        config = self._config
        try:
            claims = jwt.decode(
                hello.token,
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
            raise Refused(wire.TOKEN_EXPIRED, "the token has expired") from None
        except jwt.InvalidTokenError as error:
            # PyJWT's messages describe the claim or signature, never the token itself.
            raise Refused(wire.AUTH_FAILED, f"the token was refused: {error}") from None
        return _identity_from(claims)


def _identity_from(claims: dict) -> Identity:
    user = claims["sub"]
    if not isinstance(user, str) or not wire.NAME_PATTERN.fullmatch(user):
        raise Refused(wire.AUTH_FAILED, "the token's sub is not a valid user id")
    display_name = claims.get("name", user)
    if not isinstance(display_name, str) or not 0 < len(display_name) <= 64:
        raise Refused(wire.AUTH_FAILED, "the token's name must be a string of 1-64 characters")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(
        isinstance(role, str) and wire.NAME_PATTERN.fullmatch(role) for role in roles
    ):
        raise Refused(wire.AUTH_FAILED, "the token's roles must be a list of role names")
    return Identity(user, display_name, frozenset(roles))


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
) -> str:
    """A token this server accepts (for operators and tests). RS256/ES256 need the private
    `signing_key`; HS256 signs with the configured secret."""
    claims = {"sub": user, "roles": roles, "iat": int(now), "exp": int(now + ttl)}
    if name is not None:
        claims["name"] = name
    if config.audience is not None:
        claims["aud"] = config.audience
    if config.issuer is not None:
        claims["iss"] = config.issuer
    if config.algorithm == "HS256":
        signing_key = config.secret_file.read_bytes().strip()
    return jwt.encode(claims, signing_key, algorithm=config.algorithm)
