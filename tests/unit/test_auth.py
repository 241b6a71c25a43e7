"""Authenticators: open mode trusts the name, token mode only a valid JWT."""

import time
from dataclasses import replace

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chatd import auth, errors, wire
from chatd.auth import (
    NO_ROLES,
    OpenAuthenticator,
    TokenAuthenticator,
    authenticator_for,
    mint_token,
    role_set,
)
from chatd.config import AuthConfig, ConfigError, parse_config
from chatd.errors import ChatError


@pytest.fixture
def hs256(tmp_path) -> AuthConfig:
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 40 + b"\n")
    return AuthConfig(
        mode="token",
        hello_timeout=10.0,
        algorithm="HS256",
        secret_file=secret,
        public_key_file=None,
        audience="chatd",
        issuer="https://id.example.com",
        leeway=5.0,
    )


def hello_with(token: str) -> wire.Hello:
    return wire.Hello(name=None, ref=None, token=token)


def test_open_mode_identity_is_the_picked_name():
    identity = OpenAuthenticator().identify(wire.Hello(name="alice", ref=None))
    assert (identity.user, identity.display_name, identity.roles) == ("alice", "alice", frozenset())


def test_open_mode_needs_a_name():
    with pytest.raises(ChatError) as refused:
        OpenAuthenticator().identify(hello_with("x.y.z"))
    assert refused.value.code == errors.BAD_FRAME


def test_a_minted_token_gives_user_name_and_roles(hs256):
    token = mint_token(hs256, "alice", roles=["agent"], ttl=60, now=time.time(), name="Alice L")
    identity = TokenAuthenticator(hs256, "x.ini").identify(hello_with(token))
    assert (identity.user, identity.display_name, identity.roles) == (
        "alice",
        "Alice L",
        frozenset({"agent"}),
    )


def test_expired_token_is_token_expired(hs256):
    token = mint_token(hs256, "alice", roles=[], ttl=60, now=time.time() - 3600)
    with pytest.raises(ChatError) as refused:
        TokenAuthenticator(hs256, "x.ini").identify(hello_with(token))
    assert refused.value.code == errors.TOKEN_EXPIRED


def test_expiry_within_the_leeway_is_accepted(hs256):
    token = mint_token(hs256, "alice", roles=[], ttl=60, now=time.time() - 62)
    assert TokenAuthenticator(hs256, "x.ini").identify(hello_with(token)).user == "alice"


@pytest.mark.parametrize(
    "change",
    [
        {"audience": "someone-else"},
        {"issuer": "https://evil.example.com"},
    ],
)
def test_wrong_audience_or_issuer_is_refused(hs256, change):
    token = mint_token(replace(hs256, **change), "alice", roles=[], ttl=60, now=time.time())
    with pytest.raises(ChatError) as refused:
        TokenAuthenticator(hs256, "x.ini").identify(hello_with(token))
    assert refused.value.code == errors.AUTH_FAILED


def test_token_signed_with_another_secret_is_refused(hs256, tmp_path):
    other = tmp_path / "other"
    other.write_bytes(b"o" * 40)
    token = mint_token(
        replace(hs256, secret_file=other), "alice", roles=[], ttl=60, now=time.time()
    )
    with pytest.raises(ChatError) as refused:
        TokenAuthenticator(hs256, "x.ini").identify(hello_with(token))
    assert refused.value.code == errors.AUTH_FAILED


def test_unsigned_token_is_refused(hs256):
    token = jwt.encode({"sub": "alice", "exp": time.time() + 60}, None, algorithm="none")
    with pytest.raises(ChatError) as refused:
        TokenAuthenticator(hs256, "x.ini").identify(hello_with(token))
    assert refused.value.code == errors.AUTH_FAILED


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "../etc/passwd"},
        {"sub": "alice", "roles": "agent"},
        {"sub": "alice", "roles": ["not a role"]},
        {"sub": "alice", "name": ""},
        {"roles": []},
    ],
)
def test_malformed_claims_are_refused(hs256, claims):
    claims = {
        "exp": int(time.time()) + 60,
        "aud": "chatd",
        "iss": "https://id.example.com",
    } | claims
    token = jwt.encode(claims, hs256.secret_file.read_bytes().strip(), algorithm="HS256")
    with pytest.raises(ChatError) as refused:
        TokenAuthenticator(hs256, "x.ini").identify(hello_with(token))
    assert refused.value.code == errors.AUTH_FAILED


def test_token_mode_needs_a_token(hs256):
    with pytest.raises(ChatError) as refused:
        TokenAuthenticator(hs256, "x.ini").identify(wire.Hello(name="alice", ref=None))
    assert refused.value.code == errors.AUTH_FAILED


def test_short_secret_is_a_config_error(hs256):
    hs256.secret_file.write_bytes(b"short")
    with pytest.raises(ConfigError) as error:
        TokenAuthenticator(hs256, "etc/chatd.ini")
    assert str(error.value) == "etc/chatd.ini: [auth] secret_file: holds fewer than 32 bytes"


def test_es256_tokens_verify_with_the_public_key(tmp_path):
    private = ec.generate_private_key(ec.SECP256R1())
    public_file = tmp_path / "public.pem"
    public_file.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config = parse_config(
        f"[auth]\nmode = token\nalgorithm = ES256\npublic_key_file = {public_file}\n", "t.ini"
    ).auth
    signing_key = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    token = mint_token(
        config, "bob", roles=["staff"], ttl=60, now=time.time(), signing_key=signing_key
    )
    identity = authenticator_for(config, "t.ini").identify(hello_with(token))
    assert (identity.user, identity.roles) == ("bob", frozenset({"staff"}))


def test_public_key_that_is_not_a_key_is_a_config_error(tmp_path):
    bogus = tmp_path / "public.pem"
    bogus.write_text("not a key")
    config = parse_config(
        f"[auth]\nmode = token\nalgorithm = RS256\npublic_key_file = {bogus}\n", "t.ini"
    ).auth
    with pytest.raises(ConfigError) as error:
        authenticator_for(config, "t.ini")
    assert str(error.value).startswith("t.ini: [auth] public_key_file: not a PEM RS256 public key")


def test_token_mode_without_a_secret_file_is_a_config_error():
    with pytest.raises(ConfigError) as error:
        parse_config("[auth]\nmode = token\n", "t.ini")
    assert str(error.value) == (
        "t.ini: [auth] secret_file: is required with mode = token and HS256"
    )


def test_identities_with_the_same_roles_share_one_frozenset(hs256):
    """Sessions keep their roles: one frozenset per distinct set, not one per session."""
    authenticator = TokenAuthenticator(hs256, "test.ini")

    def roles_of(user: str, roles: list[str]) -> frozenset[str]:
        token = mint_token(hs256, user, roles=roles, ttl=60, now=time.time())
        return authenticator.identify(hello_with(token)).roles

    assert roles_of("alice", ["agent", "admin"]) is roles_of("bob", ["admin", "agent"])
    assert roles_of("carol", []) is NO_ROLES
    first, second = (OpenAuthenticator().identify(wire.Hello(name=n, ref=None)) for n in "ab")
    assert first.roles is second.roles is NO_ROLES


def test_shared_role_sets_are_bounded(monkeypatch):
    monkeypatch.setattr(auth, "_ROLE_SETS", {NO_ROLES: NO_ROLES})
    monkeypatch.setattr(auth, "MAX_SHARED_ROLE_SETS", 3)
    kept = [role_set([f"role{n}"]) for n in range(10)]
    assert kept == [frozenset({f"role{n}"}) for n in range(10)]
    assert len(auth._ROLE_SETS) == 3
    assert role_set(["role1"]) is kept[1] and role_set(["role7"]) is not kept[7]
