"""The unsent-bytes budget on real sockets: the daemon's listener endpoint (sendnow) and protocol,
with a MemoryReactorClock standing in for the reactor's registries and its time (no global
reactor, no sleeps). Each peer is a raw TCP socket with a small receive buffer, spoken to by
the `websockets` library's sans-I/O client: what it reads, and when, is up to the test."""

from __future__ import annotations

import gc
import json
import select
import socket
import weakref
from dataclasses import replace

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogBeginner, globalLogPublisher
from twisted.python.failure import Failure
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.uri import parse_uri

from chatd import sendnow, wire
from chatd.admission import Admission
from chatd.auth import OpenAuthenticator
from chatd.config import load_config
from chatd.outgoing import prepare_frames
from chatd.protocol import ListenerContext
from chatd.rooms import message_draft
from chatd.tap import build_listener
from chatd.web import HealthResource

URL = "ws://127.0.0.1:8080/ws"
BUDGET = 32 * 1024
GRACE = 5.0
LIMITS = replace(
    load_config(None).limits,
    max_buffered_bytes=BUDGET,
    slow_consumer_grace=GRACE,
    ping_interval=0.0,
    messages_per_second=1000.0,
    message_burst=1000,
)


def queued(transport) -> int:
    """What Twisted holds in its write buffer for a transport."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class Peer:
    """A client on a real socket; it reads only when the test says so."""

    def __init__(self, listener: Listener, receive_buffer: int):
        self.listener = listener
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.socket.connect(listener.address)
        self.socket.setblocking(False)
        listener.port.doRead()  # accept: the daemon's protocol on a SendNowServer
        self.protocol = listener.made[-1]
        self.transport = self.protocol.transport
        assert type(self.transport) is sendnow.SendNowServer
        self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.client = ClientProtocol(parse_uri(URL), max_size=None)
        self.client.send_request(self.client.connect())
        self.frames: list[dict] = []
        self.close_code: int | None = None
        self.received = 0  # bytes read from the socket
        listener.peers.append(self)
        self._flush()
        listener.pump()
        self.read()
        assert self.protocol in listener.factory.live

    def _flush(self) -> None:
        for data in self.client.data_to_send():
            if data:
                self.socket.sendall(data)

    def send_json(self, frame: dict) -> None:
        self.client.send_text(json.dumps(frame).encode())
        self._flush()
        self.listener.pump()

    def read(self, limit: int | None = None) -> int:
        """Read what is there (at most `limit` bytes); returns how many bytes."""
        got = 0
        while limit is None or got < limit:
            try:
                chunk = self.socket.recv(min(65536, limit - got) if limit else 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.client.receive_eof()
                break
            got += len(chunk)
            self.client.receive_data(chunk)
        self.received += got
        for event in self.client.events_received():
            if getattr(event, "opcode", None) is Opcode.TEXT:
                self.frames.append(json.loads(event.data))
            elif getattr(event, "opcode", None) is Opcode.CLOSE:
                self.close_code = self.client.close_code
        return got

    def read_slowly(self, chunk: int, seconds: float, step: float = 0.25) -> None:
        """Read `chunk` bytes every `step` seconds for `seconds`, letting the daemon send."""
        for _ in range(round(seconds / step)):
            self.read(chunk)
            self.listener.pump()
            self.listener.reactor.advance(step)
            self.listener.pump()

    def of_type(self, kind: str) -> list[dict]:
        return [frame for frame in self.frames if frame["type"] == kind]

    @property
    def open(self) -> bool:
        """True while the daemon has not begun to close this connection."""
        return self.protocol.state == self.protocol.STATE_OPEN

    @property
    def disconnected(self) -> bool:
        return bool(self.transport.disconnected)


class Listener:
    """One ws listener on 127.0.0.1, built as tap builds it."""

    def __init__(self, reactor: MemoryReactorClock, server):
        self.reactor = reactor
        self.server = server
        context = ListenerContext(
            name="ws",
            server=server,
            parser=wire.FrameParser(max_text_chars=LIMITS.max_text_chars),
            authenticator=OpenAuthenticator(),
            limits=LIMITS,
            hello_timeout=10.0,
            admission=Admission(100, 100),
            clock=reactor,
        )
        self.factory, _front_door = build_listener(context, URL, HealthResource(server, dict))
        self.made = []
        build = self.factory.buildProtocol
        self.factory.buildProtocol = lambda address: (
            self.made.append(build(address)) or (self.made[-1])
        )
        self.port = sendnow.TCPServerEndpoint(reactor, 0, "127.0.0.1").listen(self.factory).result
        self.address = ("127.0.0.1", self.port.getHost().port)
        self.peers: list[Peer] = []

    def connect(self, name: str, room: str | None = "lobby", receive_buffer=4096) -> Peer:
        peer = Peer(self, receive_buffer)
        peer.send_json({"type": "hello", "name": name})
        peer.read()
        if room is not None:
            peer.send_json({"type": "join", "room": room})
            peer.read()
        return peer

    def pump(self) -> None:
        """What the reactor would do now: read what peers sent, send what they can take, run
        what is due (the end-of-turn commit)."""
        for _ in range(50):
            before = [queued(peer.transport) for peer in self.peers]
            live = [peer.transport for peer in self.peers if not peer.transport.disconnected]
            readable, writable, _ = select.select(live, live, [], 0) if live else ([], [], [])
            for transport in readable:
                self._run(transport, transport.doRead)
            for transport in writable:
                if transport in self.reactor.getWriters():
                    self._run(transport, transport.doWrite)
            self.reactor.advance(0)
            after = [queued(peer.transport) for peer in self.peers]
            if not readable and after == before:
                return

    def _run(self, transport, method) -> None:
        if transport.disconnected:
            return
        why = method()
        if why:
            transport.connectionLost(Failure(why))

    def post(self, room: str, text: str, sender: str = "sender") -> None:
        """A message to `room`, committed and fanned out as a `say` would be."""
        self.server.post(
            self.server.rooms[room],
            message_draft(sender, sender, None, text, self.reactor.seconds()),
        )
        self.pump()

    def close(self) -> None:
        for peer in self.peers:
            peer.socket.close()
            if not peer.transport.disconnected:
                peer.transport.connectionLost(Failure(ConnectionError("test over")))
        self.port.stopListening()


@pytest.fixture
def listener(reactor, make_chat):
    listener = Listener(reactor, make_chat(clock=reactor, prepare=prepare_frames))
    yield listener
    listener.close()


def drops(listener: Listener) -> float:
    return listener.server.metrics.slow_consumer_drops._value.get()


def test_a_peer_that_never_reads_is_dropped_after_the_grace_while_writes_keep_coming(listener):
    reader = listener.connect("reader")
    stalled = listener.connect("stalled")
    text = "x" * 1000
    went_over = None
    for second in range(30):  # 2 KB/s: far from 16 times the budget in 30 s
        listener.post("lobby", text)
        listener.post("lobby", text)
        reader.read()
        if (
            went_over is None
            and stalled.transport._tempDataLen + len(stalled.transport.dataBuffer) > BUDGET
        ):
            went_over = second
        if not stalled.open:
            break
        listener.reactor.advance(1.0)
    assert went_over is not None
    assert not stalled.open
    # Dropped once the grace ran out, not later: not restarted by every write.
    assert second - went_over <= GRACE + 1
    assert drops(listener) == 1
    listener.reactor.advance(2.0)  # Autobahn's closing handshake timeout drops the TCP link
    listener.pump()
    assert stalled.disconnected
    assert reader.open and len(reader.of_type("message")) == 2 * (second + 1)


def test_a_peer_that_never_reads_is_dropped_when_writes_stop(listener):
    reader = listener.connect("reader")
    stalled = listener.connect("stalled")
    for _ in range(60):  # one burst over the budget, far under 16 times it; then silence
        listener.post("lobby", "x" * 1000)
        reader.read()
    assert stalled.open
    listener.reactor.advance(GRACE - 0.5)
    assert stalled.open
    listener.reactor.advance(1.0)  # no write since: only a timer can notice
    assert not stalled.open
    assert drops(listener) == 1 and reader.open


def test_a_peer_that_reads_below_the_budget_within_the_grace_is_kept(listener):
    slow = listener.connect("slow")
    posted = 0
    for _round in range(6):  # 30 s: six times the grace
        for _ in range(50):  # a burst of 50 KB: over the budget ...
            listener.post("lobby", "x" * 1000)
            posted += 1
        # ... read down in 4 s (12.5 KB/s), under the budget again before the grace ends,
        # while the room goes on (and pushes it back over the budget) after that.
        slow.read_slowly(4096, 4.0, step=0.25)
        assert slow.open
        listener.post("lobby", "y" * 1000)
        posted += 1
        listener.reactor.advance(1.0)
    assert slow.open and drops(listener) == 0
    for _ in range(100):
        slow.read()
        listener.pump()
    assert len(slow.of_type("message")) == posted


def test_a_peer_that_keeps_reading_is_kept_however_much_the_room_sends(listener):
    """What counts is what is queued, not what was written since the queue last emptied."""
    steady = listener.connect("steady")
    for _ in range(100):  # over the budget at once
        listener.post("lobby", "x" * 1000)
    posted = 100
    for _ in range(160):  # 40 s at 16 KB/s: 640 KB, more than 16 times the budget
        listener.post("lobby", "y" * 4000)
        posted += 1
        while queued(steady.transport) > BUDGET // 2:  # it reads what comes, as it comes
            steady.read(1024)
            listener.pump()
        assert queued(steady.transport) > 0  # never quite caught up
        listener.reactor.advance(0.25)
        assert steady.open
    for _ in range(100):
        steady.read()
        listener.pump()
    assert len(steady.of_type("message")) == posted
    assert drops(listener) == 0


def test_a_reply_larger_than_the_budget_to_a_slow_reader_does_not_drop_it(listener):
    reader = listener.connect("reader")
    slow = listener.connect("slow")
    for number in range(170):  # 540 KB of history: over 16 times the budget
        listener.post("lobby", f"{number:04} " + "x" * 3100)
        reader.read()
        slow.read()
    slow.frames.clear()
    slow.send_json({"type": "history", "room": "lobby", "limit": 170, "id": "page"})
    assert queued(slow.transport) > 16 * BUDGET
    # It reads 24 KB/s while the room sends it 4 KB/s: it is never far behind what it asked
    # for, though the room's messages wait behind the page until it has read it.
    for _ in range(32):
        listener.post("lobby", "z" * 4000)
        reader.read()
        slow.read_slowly(6000, 1.0)
        assert slow.open
    for _ in range(50):
        slow.read()
        listener.pump()
    [page] = slow.of_type("history")
    assert page["ref"] == "page" and len(page["events"]) == 170
    assert len(slow.of_type("message")) == 32
    assert drops(listener) == 0


def test_a_peer_that_reads_nothing_of_a_large_reply_is_dropped(listener):
    reader = listener.connect("reader")
    for number in range(100):
        listener.post("lobby", f"{number:04} " + "x" * 1000)
        reader.read()
    stalled = listener.connect("stalled", room=None)
    stalled.send_json({"type": "history", "room": "lobby", "limit": 100, "id": "page"})
    listener.reactor.advance(GRACE - 0.5)
    assert stalled.open
    listener.reactor.advance(1.0)
    assert not stalled.open and drops(listener) == 1


def test_a_backlog_far_over_the_budget_is_dropped_at_once(listener):
    stalled = listener.connect("stalled")
    for _ in range(16 * BUDGET // 1000 + 1):
        listener.post("lobby", "x" * 1000)
        if not stalled.open:
            break
    assert not stalled.open and drops(listener) == 1
    assert listener.reactor.seconds() == 0


@pytest.fixture
def no_log_buffer():
    """Under pytest nobody began logging, so Twisted keeps the last events (and the protocols
    they name as their source) in a buffer; the daemon logs to files and keeps none."""
    buffer = globalLogBeginner._temporaryObserver
    if buffer is not None:
        globalLogPublisher.removeObserver(buffer)
    yield
    if buffer is not None:
        globalLogPublisher.addObserver(buffer)


def test_a_dropped_connection_is_freed_when_it_closes(listener, no_log_buffer):
    """No garbage collection needed: the protocol, its session and its unsent bytes go as the
    connection closes, not when a collection finds the cycles they were in."""
    reader = listener.connect("reader")
    stalled = listener.connect("stalled")
    stalled.send_json({"type": "history", "room": "lobby", "id": "page"})
    session = weakref.ref(stalled.protocol.session)
    gc.collect()
    gc.disable()
    try:
        for _ in range(60):
            listener.post("lobby", "x" * 1000)
            reader.read()
        listener.reactor.advance(GRACE)
        assert not stalled.open
        listener.reactor.advance(2.0)  # Autobahn's closing handshake timeout
        listener.pump()
        assert stalled.disconnected
        transport = stalled.transport
        assert (transport.dataBuffer, transport._tempDataBuffer, transport._tempDataLen) == (
            b"",
            [],
            0,
        )
        protocol = weakref.ref(stalled.protocol)
        listener.peers.remove(stalled)
        listener.made.clear()
        del stalled
        assert protocol() is None
        assert session() is None
        assert reader.open
    finally:
        gc.enable()


def test_a_connection_lost_with_unsent_bytes_is_freed_at_once(listener, no_log_buffer):
    """However a connection ends (here the peer resets it with a backlog queued), what it held
    goes with it."""
    reader = listener.connect("reader")
    gone = listener.connect("gone")
    for _ in range(40):
        listener.post("lobby", "x" * 1000)
        reader.read()
    transport = gone.transport
    assert queued(transport) > 0
    protocol, session = weakref.ref(gone.protocol), weakref.ref(gone.protocol.session)
    gc.collect()
    gc.disable()
    try:
        gone.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        gone.socket.close()  # RST
        listener.pump()
        assert transport.disconnected
        assert (transport.dataBuffer, transport._tempDataBuffer) == (b"", [])
        listener.peers.remove(gone)
        listener.made.clear()
        del gone
        assert protocol() is None
        assert session() is None
        assert reader.open and len(listener.server.rooms["lobby"].sessions) == 1
    finally:
        gc.enable()
