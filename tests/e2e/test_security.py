"""Attacks on a real `twistd -n chatd`: tokens, permissions, origins, slow handshakes, clients
that never read, weak TLS, and a certificate swapped under a live session.

After each attack the room's transcript must hold exactly the messages that were accepted.
(Floods, the hello deadline and the per-address cap are in test_limits.py; oversized,
binary and invalid UTF-8 frames in test_errors.py.)
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import jwt
import pytest
from chatd_harness import wait_for
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

SECRET = b"a-test-secret-of-at-least-32-bytes-long"
AUDIENCE = "chatd-tests"


def token(sub: str, *, roles=(), ttl: float = 300, secret: bytes = SECRET, **claims) -> str:
    """Minted with PyJWT directly, not with chatd's own code."""
    now = int(time.time())
    body = {"sub": sub, "roles": list(roles), "iat": now, "exp": now + ttl, "aud": AUDIENCE}
    return jwt.encode(body | claims, secret, algorithm="HS256")


@pytest.fixture
def token_daemon(make_daemon, tmp_path):
    secret = tmp_path / "jwt-secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o400)
    return make_daemon(
        auth={"mode": "token", "secret_file": secret, "audience": AUDIENCE, "leeway": "5s"},
        rooms={"allow_create": "no"},
        **{
            "room:lobby": {"join": "*", "post": "*"},
            "room:announcements": {"join": "*", "post": "staff"},
            "room:staff-only": {"join": "staff", "post": "staff"},
        },
    )


def hello_with_token(client, value: str) -> dict:
    client.send({"type": "hello", "token": value})
    reply = client.recv()
    if reply["type"] == "welcome":
        client.name = reply["user"]
    return reply


def messages_in(daemon, room: str) -> list[tuple[str, str]]:
    return [
        (event["from"], event["text"])
        for event in daemon.transcript(room)
        if event["type"] == "message"
    ]


# -- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mint_bad_token", "code"),
    [
        (lambda: token("mallory", secret=b"x" * 40), "auth_failed"),  # signed with another key
        (lambda: token("mallory", ttl=-60), "token_expired"),
        (lambda: token("mallory", aud="another-service"), "auth_failed"),
        (
            lambda: jwt.encode({"sub": "mallory", "exp": time.time() + 60}, None, algorithm="none"),
            None,
        ),
        (lambda: "not.a.jwt", "auth_failed"),
    ],
    ids=["wrong-key", "expired", "wrong-audience", "unsigned", "garbage"],
)
def test_bad_expired_and_wrong_audience_tokens_are_closed_1008(
    token_daemon, clients, mint_bad_token, code
):
    """Each token is minted when its test runs (one minted at collection could expire before
    a long suite reaches it, and be refused for that instead)."""
    witness = clients(token_daemon.url("wss"))
    assert hello_with_token(witness, token("alice"))["user"] == "alice"
    witness.join("lobby")

    attacker = clients(token_daemon.url("ws"))
    error = hello_with_token(attacker, mint_bad_token())
    assert (error["type"], error["code"]) == ("error", code or "auth_failed"), error
    assert attacker.expect_closed()[0] == 1008

    witness.say("lobby", "still here", "w-1")
    assert messages_in(token_daemon, "lobby") == [("alice", "still here")]


def test_a_name_alone_is_not_enough_in_token_mode(token_daemon, clients):
    client = clients(token_daemon.url("ws"))
    client.send({"type": "hello", "name": "alice"})
    assert client.recv()["code"] == "auth_failed"
    assert client.expect_closed()[0] == 1008


def test_token_identity_is_the_sender(token_daemon, clients):
    """The token decides who speaks: a name in hello, or a from in say, changes nothing."""
    client = clients(token_daemon.url("wss"))
    client.send(
        {"type": "hello", "token": token("alice", roles=["staff"], name="Alice L"), "name": "bob"}
    )
    welcome = client.recv()
    assert (welcome["user"], welcome["name"], welcome["roles"]) == ("alice", "Alice L", ["staff"])
    client.name = "alice"
    client.join("lobby")
    client.send({"type": "say", "room": "lobby", "text": "who am I", "id": "s-1", "from": "bob"})
    message = client.expect(type="message")
    assert message["from"] == "alice"
    assert messages_in(token_daemon, "lobby") == [("alice", "who am I")]


def test_tokens_never_reach_logs_or_transcripts(token_daemon, clients):
    good, expired = token("alice"), token("alice", ttl=-60)
    for value in (expired, good):
        client = clients(token_daemon.url("ws"))
        hello_with_token(client, value)
    client.join("lobby")
    client.say("lobby", "hello", "t-1")
    # A token pasted into a URL by mistake: refused there, and its query kept out of the log.
    in_url = token("alice", ttl=600)
    for path in (f"/?token={in_url}", f"/healthz?token={in_url}"):
        assert token_daemon.get("ws", path)[0] == 200
    token_daemon.stop()
    assert '"GET /healthz HTTP/1.1" 200' in token_daemon.log
    stored = b"".join(path.read_bytes() for path in token_daemon.transcripts.iterdir())
    for value in (good, expired, in_url):
        signature = value.rsplit(".", 1)[1]
        assert signature not in token_daemon.log
        assert signature.encode() not in stored
    # The refusal is logged, with why, but without the token.
    assert "was refused at hello: the token has expired" in token_daemon.log


# -- room permissions ---------------------------------------------------------------------------


def test_posting_without_permission_is_forbidden(token_daemon, clients):
    reader = clients(token_daemon.url("ws"))
    hello_with_token(reader, token("reader"))
    staff = clients(token_daemon.url("wss"))
    hello_with_token(staff, token("boss", roles=["staff"]))

    reader.join("announcements")
    staff.join("announcements")
    reader.next_event()  # boss joined

    reader.send({"type": "say", "room": "announcements", "text": "me too", "id": "r-1"})
    assert reader.expect(type="error")["code"] == "forbidden"
    message, _ack = staff.say("announcements", "office closed friday", "b-1")
    assert reader.next_event() == message

    for frame in (
        {"type": "join", "room": "staff-only"},
        {"type": "who", "room": "staff-only"},
        {"type": "history", "room": "staff-only"},
        {"type": "join", "room": "brand-new-room"},  # [rooms] allow_create = no
    ):
        reader.send(frame | {"id": "r-2"})
        error = reader.expect(type="error")
        assert (error["code"], error["ref"]) == ("forbidden", "r-2"), (frame, error)

    staff.join("staff-only")
    assert messages_in(token_daemon, "announcements") == [("boss", "office closed friday")]
    assert not (token_daemon.transcripts / "brand-new-room.jsonl").exists()


# -- the handshake ------------------------------------------------------------------------------


def test_foreign_origin_is_refused(daemon, websocket_ssl):
    port = daemon.ports["ws"]
    with connect(daemon.url("ws"), origin=f"http://localhost:{port}", proxy=None) as own:
        own.send(json.dumps({"type": "hello", "name": "own"}))
        assert json.loads(own.recv(timeout=5))["type"] == "welcome"
    for origin in ("https://evil.example.com", f"http://evil.example.com:{port}", "null"):
        with pytest.raises(InvalidStatus) as refused:
            connect(daemon.url("ws"), origin=origin, proxy=None, open_timeout=5)
        assert refused.value.response.status_code == 403, origin
    with pytest.raises(InvalidStatus) as refused:
        connect(
            daemon.url("wss"),
            origin=f"http://localhost:{daemon.ports['wss']}",  # http is not the wss origin
            ssl=websocket_ssl,
            proxy=None,
            open_timeout=5,
        )
    assert refused.value.response.status_code == 403


def test_own_ipv6_origin_is_accepted_and_a_port_with_a_suffix_is_403(daemon):
    """The startup log lists http://[::1]:PORT among the ws listener's origins; a browser
    page there must get in. An Origin whose port runs on into another host is refused as
    foreign (403), not as a malformed request (400)."""
    port = daemon.ports["ws"]
    assert f"http://[::1]:{port}" in daemon.log_of_last_start
    with connect(daemon.url("ws"), origin=f"http://[::1]:{port}", proxy=None) as own:
        own.send(json.dumps({"type": "hello", "name": "own6"}))
        assert json.loads(own.recv(timeout=5))["type"] == "welcome"
    for origin in (f"http://localhost:{port}.evil.com", f"http://localhost:{port}/x", "http://1"):
        with pytest.raises(InvalidStatus) as refused:
            connect(daemon.url("ws"), origin=origin, proxy=None, open_timeout=5)
        assert refused.value.response.status_code == 403, origin
    assert daemon.running


def test_configured_origins_replace_the_defaults(make_daemon, websocket_ssl):
    daemon = make_daemon(server={"allowed_origins": "https://chat.example.com"})
    port = daemon.ports["ws"]
    with pytest.raises(InvalidStatus):
        connect(daemon.url("ws"), origin=f"http://localhost:{port}", proxy=None, open_timeout=5)
    # Without a port, the origin means the scheme's default one, as browsers send it.
    with pytest.raises(InvalidStatus):
        connect(
            daemon.url("wss"),
            origin="https://chat.example.com:8443",
            ssl=websocket_ssl,
            proxy=None,
            open_timeout=5,
        )
    with connect(
        daemon.url("wss"), origin="https://chat.example.com", ssl=websocket_ssl, proxy=None
    ) as allowed:
        allowed.send(json.dumps({"type": "hello", "name": "ok"}))
        assert json.loads(allowed.recv(timeout=5))["type"] == "welcome"


def test_slow_handshake_is_cut_off(make_daemon):
    """A client dripping its request a byte at a time (slowloris) is cut off at the deadline."""
    daemon = make_daemon(limits={"handshake_timeout": "1s"})
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", daemon.ports["ws"]), timeout=5) as sock:
        request = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nX-Slow: "
        sock.sendall(request)
        closed = False
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            for _ in range(40):  # at most 8 s
                sock.sendall(b"a")
                sock.settimeout(0.2)
                try:
                    closed = sock.recv(1024) == b""
                except TimeoutError:
                    continue
                break
        closed = True
    elapsed = time.monotonic() - started
    assert closed and elapsed < 4, elapsed
    assert daemon.running


# -- slow consumers -----------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1])


def test_client_that_never_reads_is_dropped_and_memory_stays_bounded(make_daemon, clients):
    daemon = make_daemon(
        limits={"max_buffered_bytes": "256K", "max_message_bytes": "128K", "max_text_chars": 65000},
        history={"memory_events": 10, "replay_events": 0},
    )
    sender, listener = clients(daemon.url("ws")), clients(daemon.url("wss"))
    sender.hello("sender")
    sender.join("busy")
    listener.hello("listener")
    listener.join("busy")
    sender.next_event()

    # A client whose socket buffer is tiny and whose reader stops after one queued frame.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", daemon.ports["ws"]))
    stalled = clients(daemon.url("ws"), sock=sock, max_queue=1)
    stalled.hello("stalled")
    stalled.send({"type": "join", "room": "busy"})

    rss_before = rss_kib(daemon.process.pid)
    text = "x" * 60_000
    total = 400  # 24 MB through the room: far over every buffer on the way
    for number in range(total):
        sender.send({"type": "say", "room": "busy", "text": text, "id": f"m-{number}"})
        if number % 20 == 19:  # keep the sender itself from being a slow consumer
            wait_for(lambda: _drain(sender, listener), 10, "the room to catch up")
    wait_for(lambda: "is not reading" in daemon.log_of_last_start, 10, "the slow-consumer line")
    rss_growth_mib = (rss_kib(daemon.process.pid) - rss_before) / 1024

    assert rss_growth_mib < 16, f"RSS grew by {rss_growth_mib:.1f} MiB"
    assert "stalled" in daemon.log_of_last_start.split("is not reading")[0].rsplit("\n", 1)[-1]
    wait_for(lambda: _drain(sender, listener), 10, "the room to catch up")
    ids = [frame["id"] for frame in listener.received if frame.get("type") == "message"]
    assert ids == [f"m-{number}" for number in range(total)]
    stored = [event["id"] for event in daemon.transcript("busy") if event["type"] == "message"]
    assert stored == ids
    leave = [e for e in daemon.transcript("busy") if e.get("user") == "stalled"][-1]
    assert leave["event"] == "leave"


def _drain(*clients) -> bool:
    """Read what is there; True once every client has seen every message sent so far."""
    for client in clients:
        with contextlib.suppress(TimeoutError):
            while True:
                client.recv(timeout=0.05)
    sent = sum(1 for frame in clients[0].received if frame.get("type") == "ack")
    return all(
        sum(1 for frame in client.received if frame.get("type") == "message") >= sent
        for client in clients
    )


# -- TLS ----------------------------------------------------------------------------------------


def _handshake(daemon, context: ssl.SSLContext) -> bytes:
    """A fresh TLS handshake with the wss port; returns the server certificate (DER)."""
    with (
        socket.create_connection(("127.0.0.1", daemon.ports["wss"]), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.getpeercert(binary_form=True)


def _client_context(ca, *, maximum=None, ciphers=None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if maximum is not None:
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


def test_tls_refuses_old_versions_and_weak_ciphers(daemon, ca):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls11 = _client_context(ca, maximum=ssl.TLSVersion.TLSv1_1, ciphers="DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(daemon, tls11)
    assert "PROTOCOL_VERSION" in str(refused.value).upper()

    for weak in ("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA", "AES128-GCM-SHA256"):
        context = _client_context(ca, maximum=ssl.TLSVersion.TLSv1_2, ciphers=weak)
        with pytest.raises(ssl.SSLError) as refused:
            _handshake(daemon, context)
        assert (
            "HANDSHAKE_FAILURE" in str(refused.value).upper()
            or "NO_SHARED" in str(refused.value).upper()
        ), refused.value

    strong = _client_context(
        ca,
        maximum=ssl.TLSVersion.TLSv1_2,
        ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
    )
    assert _handshake(daemon, strong)


def test_a_returning_tls_client_resumes_its_session(daemon, ca):
    """A second connection offering the first's session skips the full handshake."""
    context = _client_context(ca)

    def get_healthz(session=None) -> ssl.SSLSocket:
        with (
            socket.create_connection(("127.0.0.1", daemon.ports["wss"]), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
        ):
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert tls.recv(1024).startswith(b"HTTP/1.1 200")  # TLS 1.3: the ticket came first
            return tls.session, tls.session_reused

    session, reused = get_healthz()
    assert not reused
    assert get_healthz(session)[1] is True


def test_the_certificate_expiry_is_a_metric(daemon, server_cert):
    leaf = x509.load_pem_x509_certificate(server_cert[0].read_bytes())
    with urllib.request.urlopen(
        f"http://127.0.0.1:{daemon.ports['metrics']}/metrics", timeout=5
    ) as response:
        text = response.read().decode()
    [line] = [x for x in text.splitlines() if x.startswith("chatd_tls_certificate_expiry_")]
    assert float(line.split()[1]) == leaf.not_valid_after_utc.timestamp()


def test_sighup_swaps_the_certificate_without_dropping_sessions(make_daemon, ca, tmp_path, clients):
    certificate, key = tmp_path / "live.pem", tmp_path / "live-key.pem"

    def install(leaf) -> bytes:
        certificate.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(
            Encoding.DER
        )

    first = install(ca.issue_cert("localhost", "127.0.0.1"))
    daemon = make_daemon(tls={"certificate": certificate, "key": key})
    context = _client_context(ca)
    assert _handshake(daemon, context) == first
    alice = clients(daemon.url("wss"))
    alice.hello("alice")
    alice.join("lobby")

    second = install(ca.issue_cert("localhost", "127.0.0.1"))
    assert second != first
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "TLS certificate reloaded" in daemon.log_of_last_start, 10, "the reload")
    alice.say("lobby", "the old session goes on", "a-1")
    assert _handshake(daemon, context) == second

    certificate.write_text("not a certificate")
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "TLS reload failed" in daemon.log_of_last_start, 10, "the failed reload")
    assert _handshake(daemon, context) == second
    alice.say("lobby", "and goes on", "a-2")
    assert daemon.running
    assert messages_in(daemon, "lobby") == [
        ("alice", "the old session goes on"),
        ("alice", "and goes on"),
    ]


def test_chatd_token_mints_what_the_daemon_accepts(token_daemon, clients):
    """The operator's `chatd token`, reading the daemon's own INI, signs an accepted token."""
    command = Path(sys.executable).parent / "chatd"
    minted = subprocess.run(
        [str(command), "token", "carol", "--role", "agent", "--name", "Carol C", "--ttl", "10m",
         "--config", str(token_daemon.config)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()  # fmt: skip
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert 590 <= claims["exp"] - claims["iat"] <= 600
    client = clients(token_daemon.url("wss"))
    welcome = hello_with_token(client, minted)
    assert (welcome["user"], welcome["name"], welcome["roles"]) == ("carol", "Carol C", ["agent"])
