"""Shared fixtures for the unit tests: no sockets, no sleeps, no global reactor.

Time is a `task.Clock` (or a `MemoryReactorClock` where Autobahn needs a reactor); transcripts
are real files under pytest's `tmp_path`. The server is built by `tap.build_server` and each
listener by `tap.build_listener`, as the daemon builds them. The doubles stand in for
collaborators, never for the thing under test: `RecordingConnection` for a WebSocket connection
as the server sees it, and iosim's in-memory transports (with `TCPTransport` remembering
TCP_NODELAY) for sockets.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateResponseAccept
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.test import iosim

from chatd import wire
from chatd.admission import Admission
from chatd.auth import OpenAuthenticator, TokenAuthenticator, mint_token
from chatd.config import load_config
from chatd.outgoing import Deflater, prepare_frames
from chatd.protocol import ListenerContext
from chatd.server import Server
from chatd.sessions import Session
from chatd.tap import build_listener, build_server
from chatd.web import HealthResource

DEFAULTS = load_config(None)


class Prepared:
    """What the server's `prepare` made of a room's events of one batch: compared by
    identity, not value."""

    def __init__(self, lines: list[bytes]):
        self.lines = lines


class RecordingConnection:
    """Records every frame the server hands to a connection, decoded, in order, and how the
    server ended it (`closed`: the close code and reason; `was_replaced`)."""

    def __init__(self):
        self.frames: list[dict] = []
        self.prepared: list[Prepared] = []
        self.writes = 0  # calls to send or send_prepared: each is one write in the daemon
        self.closed: tuple[int, str] | None = None
        self.was_replaced = False

    def close_with(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def replaced(self) -> None:
        self.was_replaced = True

    def send(self, payload: bytes) -> None:
        self.frames.append(json.loads(payload))
        self.writes += 1

    def send_prepared(self, frames: Prepared, replies: list[bytes] = ()) -> None:
        self.prepared.append(frames)
        self.frames.extend(json.loads(line) for line in [*frames.lines, *replies])
        self.writes += 1

    def of_type(self, kind: str) -> list[dict]:
        return [frame for frame in self.frames if frame["type"] == kind]


def _global_delayed_calls() -> set:
    reactor = sys.modules.get("twisted.internet.reactor")
    return set(reactor.getDelayedCalls()) if reactor is not None else set()


@pytest.fixture(autouse=True)
def global_reactor_untouched():
    """Unit tests run on injected clocks: nothing may be left scheduled on the global reactor."""
    before = _global_delayed_calls()
    yield
    assert _global_delayed_calls() <= before, "a unit test scheduled a call on the global reactor"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def transcript_dir(tmp_path: Path) -> Path:
    return tmp_path / "transcripts"


@pytest.fixture
def make_connection():
    return RecordingConnection


@pytest.fixture
def prepared_frames() -> list[Prepared]:
    """Every frame any broadcaster of this test prepared, in order."""
    return []


def config_with(base=DEFAULTS, **sections):
    """`base` with some sections' keys replaced: config_with(rooms={"max_rooms": 3})."""
    return replace(
        base,
        **{name: replace(getattr(base, name), **values) for name, values in sections.items()},
    )


@pytest.fixture
def make_chat(clock, transcript_dir, prepared_frames):
    """Build and start a Server as tap builds it, on a real transcript directory; keyword
    arguments are config sections ({key: value}). Closes the transcripts afterwards."""
    servers: list[Server] = []

    def record(lines: list[bytes]) -> Prepared:
        frames = Prepared(lines)
        prepared_frames.append(frames)
        return frames

    def make(*, clock: Clock = clock, prepare=record, **sections) -> Server:
        sections.setdefault("transcripts", {})
        sections["transcripts"] = {"directory": transcript_dir, **sections["transcripts"]}
        server = build_server(config_with(**sections), clock, prepare)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.store.close()


def identify(name: str, **extra):
    """The identity an open-mode hello as `name` establishes."""
    identity = OpenAuthenticator().identify(wire.Hello(name=name, ref=None))
    return replace(identity, **extra)


@pytest.fixture
def hello():
    """`hello(server, connection, name)`: a session, as the protocol would make it; `identity`
    replaces the open-mode one (roles, a token's identity), other keywords go in the frame."""

    def hello(server: Server, connection, name: str, *, identity=None, **frame) -> Session:
        session, _welcome = server.hello(
            connection, identity or identify(name), wire.Hello(name=name, ref=None, **frame)
        )
        return session

    return hello


@pytest.fixture
def enter(make_connection, hello):
    """Say hello as `name` and join `room`: returns (session, connection, joined reply)."""

    def enter(
        server: Server,
        name: str,
        room: str = "lobby",
        since: wire.Since | None = None,
        **frame,
    ) -> tuple[Session, RecordingConnection, dict]:
        connection = make_connection()
        session = hello(server, connection, name, **frame)
        joined = json.loads(server.join(session, wire.Join(room=room, since=since, ref=None)))
        return session, connection, joined

    return enter


class Tokens:
    """Token mode with real JWTs: an HS256 secret under tmp_path, `mint` and `identity`.

    PyJWT checks `exp` against the wall clock, so `use(clock)` first moves a test clock (still
    at 0, nothing scheduled) to the present; after that the server's clock decides expiry.
    """

    LEEWAY = 5.0

    def __init__(self, directory: Path):
        secret = directory / "jwt-secret"
        secret.write_bytes(b"k" * 40 + b"\n")
        self.section = {"mode": "token", "secret_file": secret, "leeway": self.LEEWAY}
        self.config = replace(DEFAULTS.auth, **self.section)
        self.authenticator = TokenAuthenticator(self.config, "test")
        self.clock = None

    def use(self, clock) -> None:
        self.clock = clock
        wall = float(int(time.time()))
        if clock.seconds() < wall:
            clock.advance(wall - clock.seconds())

    def mint(self, user: str, *, ttl: float = 60.0, name=None, roles=(), token_id=None) -> str:
        return mint_token(
            self.config,
            user,
            roles=list(roles),
            ttl=ttl,
            now=self.clock.seconds(),
            name=name,
            token_id=token_id,
        )

    def identity(self, user: str, **claims):
        """The identity the authenticator verifies from a freshly minted token."""
        return self.authenticator.verify(self.mint(user, **claims))


@pytest.fixture
def tokens(tmp_path, clock) -> Tokens:
    """Token mode on the test's `clock` (call `tokens.use(reactor)` for a listener)."""
    tokens = Tokens(tmp_path)
    tokens.use(clock)
    return tokens


@pytest.fixture
def log_events():
    """Every twisted.logger event emitted during the test."""
    events: list[dict] = []
    observer = events.append
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


@pytest.fixture
def umask_022():
    """A fixed umask, so that file modes do not depend on the shell that runs the tests."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def limited_file_size():
    """`limit(n)`: writes past n bytes fail with EFBIG (RLIMIT_FSIZE); `limit(None)` lifts it.

    The one way to make a real write fail halfway, as a full disk would.
    """
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(size: int | None) -> None:
        new = previous_limit if size is None else (size, previous_limit[1])
        resource.setrlimit(resource.RLIMIT_FSIZE, new)

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
    signal.signal(signal.SIGXFSZ, previous_handler)


# -- an in-memory listener: a real Autobahn client against the real server protocol ----------

URL = "ws://127.0.0.1:8080/ws"
LIMITS = replace(
    DEFAULTS.limits, max_message_bytes=1024, max_text_chars=100, max_buffered_bytes=2048
)
HELLO_TIMEOUT = 10.0


class ChatClient(WebSocketClientProtocol):
    """Records what the server sent: decoded text frames and the close code it chose."""

    server_side = None  # the ChatServerProtocol at the other end, set by ChatServer.connect

    def __init__(self):
        super().__init__()
        self.frames: list[dict] = []
        self.opened = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.pings = 0

    def onOpen(self):
        self.opened = True

    def onPing(self, payload):
        self.pings += 1
        super().onPing(payload)

    def onMessage(self, payload, isBinary):
        self.frames.append(json.loads(payload))

    def onClose(self, wasClean, code, reason):
        self.close_code = self.remoteCloseCode
        self.close_reason = self.remoteCloseReason

    def send_json(self, obj: dict) -> None:
        self.sendMessage(json.dumps(obj).encode())

    def of_type(self, kind: str) -> list[dict]:
        return [frame for frame in self.frames if frame["type"] == kind]


class TCPTransport(iosim.FakeTransport):
    """iosim's transport, remembering TCP_NODELAY as a TCP socket would."""

    tcp_no_delay = False

    def setTcpNoDelay(self, enabled):
        self.tcp_no_delay = bool(enabled)

    def getTcpNoDelay(self):
        return self.tcp_no_delay


class ChatServer:
    """One listener, as tap builds it, with in-memory connections to it.

    `via_site` puts the listener's front door in front (the daemon's path: chatd/front_door.py
    hands /ws to Autobahn, the rest to twisted.web); otherwise connections go straight to the
    WebSocket factory.
    """

    limits = LIMITS
    hello_timeout = HELLO_TIMEOUT

    def __init__(
        self,
        reactor,
        server: Server,
        admission: Admission,
        via_site: bool,
        authenticator=None,
        deflater: Deflater | None = None,
    ):
        self.reactor = reactor
        self.server = server
        context = ListenerContext(
            name="ws",
            server=server,
            parser=wire.FrameParser(max_text_chars=LIMITS.max_text_chars),
            authenticator=authenticator or OpenAuthenticator(),
            limits=LIMITS,
            hello_timeout=HELLO_TIMEOUT,
            admission=admission,
            clock=reactor,
            deflater=deflater,
        )
        self.checks = {"listener_ws": True}
        self.health = HealthResource(server, lambda: dict(self.checks))
        self.factory, self.front_door = build_listener(context, URL, self.health)
        self.site = self.front_door.site
        self._entry = self.front_door if via_site else self.factory
        self.pumps: list[iosim.IOPump] = []
        self.server_transports: list[TCPTransport] = []
        self._port = 40000

    def connect(self, ip: str = "127.0.0.1", offers=None, accept=None) -> ChatClient:
        """A client from `ip`; it offers permessage-deflate (`offers`: Autobahn's offer
        objects), as browsers do, and takes what the server answers (`accept`: Autobahn's
        perMessageCompressionAccept, by default any answer)."""
        self._port += 1
        client_address = IPv4Address("TCP", ip, self._port)
        server_address = IPv4Address("TCP", "127.0.0.1", 8080)
        server = self._entry.buildProtocol(client_address)
        client_factory = WebSocketClientFactory(URL, reactor=self.reactor)
        client_factory.setProtocolOptions(
            perMessageCompressionOffers=[PerMessageDeflateOffer()] if offers is None else offers,
            perMessageCompressionAccept=accept or PerMessageDeflateResponseAccept,
        )
        client_factory.protocol = ChatClient
        client = client_factory.buildProtocol(server_address)
        server_transport = TCPTransport(
            server, isServer=True, hostAddress=server_address, peerAddress=client_address
        )
        client_transport = iosim.FakeTransport(
            client, isServer=False, hostAddress=client_address, peerAddress=server_address
        )
        self.server_transports.append(server_transport)
        self.pumps.append(
            iosim.connect(server, server_transport, client, client_transport, clock=self.reactor)
        )
        self.flush()
        client.server_side = server_transport.protocol  # the chat protocol, after any upgrade
        return client

    def flush(self) -> None:
        """Move bytes both ways on every connection (committing batches) until all is quiet."""
        while any([pump.flush() for pump in self.pumps]):
            pass

    def welcomed(self, name: str, *, offers=None, **hello) -> ChatClient:
        client = self.connect(offers=offers)
        client.send_json({"type": "hello", "name": name, **hello})
        self.flush()
        assert client.frames[-1]["type"] == "welcome"
        return client

    def joined(self, name: str, room: str = "lobby", *, offers=None) -> ChatClient:
        client = self.welcomed(name, offers=offers)
        client.send_json({"type": "join", "room": room})
        self.flush()
        return client


@pytest.fixture
def reactor(monkeypatch) -> MemoryReactorClock:
    """The only clock: the server's, the protocol's and Autobahn's (through txaio)."""
    reactor = MemoryReactorClock()
    monkeypatch.setattr(txaio.config, "loop", reactor)
    return reactor


@pytest.fixture
def make_server(reactor, make_chat):
    def make(
        max_connections: int = 100,
        max_per_ip: int = 100,
        via_site: bool = False,
        authenticator=None,
        deflater: Deflater | None = None,
        **sections,
    ) -> ChatServer:
        """A listener; with a `deflater`, one with `[limits] compression` on."""
        prepare = deflater.outgoing if deflater else prepare_frames
        server = make_chat(clock=reactor, prepare=prepare, **sections)
        return ChatServer(
            reactor,
            server,
            Admission(max_connections, max_per_ip),
            via_site,
            authenticator,
            deflater,
        )

    return make


@pytest.fixture
def server(make_server) -> ChatServer:
    return make_server()
