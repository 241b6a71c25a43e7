"""SendNowServer on a real socket pair, and the listeners' endpoints on real sockets, with a
MemoryReactor standing in only for the reactor's reader and writer registries (no global
reactor, no reactor run)."""

import errno
import os
import socket
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from twisted.internet import main
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols import tls
from twisted.python.failure import Failure
from zope.interface import providedBy

from chatd import sendnow
from chatd.config import load_config
from chatd.tls import server_options


@pytest.fixture
def pair():
    """(transport, peer): a connected Twisted TCP transport and the raw socket at the far end."""
    ours, peer = socket.socketpair()
    reactor = MemoryReactorClock()
    transport = sendnow.SendNowServer(ours, Protocol(), ("127.0.0.1", 40000), None, 1, reactor)
    peer.setblocking(False)
    yield transport, peer, reactor
    ours.close()
    peer.close()


def received(peer: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_an_idle_transport_sends_at_once_without_registering_for_writability(pair):
    transport, peer, reactor = pair
    transport.write(b"hello")
    assert received(peer) == b"hello"
    assert transport not in reactor.getWriters()
    assert (transport.dataBuffer, transport._tempDataLen) == (b"", 0)


def test_data_queued_by_the_transport_goes_first(pair):
    transport, peer, reactor = pair
    transport.writeSequence([b"first "])  # Twisted's own queue, as when the kernel said EAGAIN
    transport.write(b"second")
    assert received(peer) == b""  # nothing jumped the queue
    assert transport in reactor.getWriters()
    transport.doWrite()
    assert received(peer) == b"first second"


def test_what_the_kernel_does_not_take_is_queued_in_order(pair):
    transport, peer, reactor = pair
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    blob = bytes(range(256)) * 4096  # 1 MiB: far more than the socket buffer holds
    transport.write(blob)
    got = received(peer)
    assert 0 < len(got) < len(blob)  # the kernel took some at once ...
    assert transport._tempDataLen == len(blob) - len(got)  # ... and Twisted queued the rest
    assert transport in reactor.getWriters()
    transport.write(b"after")
    for _ in range(100_000):
        got += received(peer)
        if transport in reactor.getWriters():
            transport.doWrite()
        else:
            break
    got += received(peer)
    assert got == blob + b"after"
    assert transport not in reactor.getWriters()


def test_a_closed_peer_is_left_to_twisted_to_report(pair):
    transport, peer, reactor = pair
    peer.close()
    for _ in range(3):  # the first send may still succeed; then EPIPE / ECONNRESET
        transport.write(b"x" * 100_000)
    assert transport in reactor.getWriters()
    assert isinstance(transport.doWrite(), Exception)  # connection lost, Twisted's way


class Receiver(Protocol):
    def __init__(self):
        self.chunks = []

    def dataReceived(self, data):
        self.chunks.append(data)


class Producer:
    paused = False

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False


def test_a_higher_pause_bound_pauses_later_but_reads_stay_64_kib(pair):
    """The unsent-bytes budget must not grow each recv(): reads of 1 MiB cost an mmap each."""
    transport, peer, _reactor = pair
    receiver = Receiver()
    transport.protocol = receiver
    backlog = sendnow.Backlog.of(transport)
    backlog.pause_over(1 << 20)
    producer = Producer()
    transport.registerProducer(producer, True)

    peer.sendall(b"x" * 200_000)
    transport.doRead()
    assert [len(chunk) for chunk in receiver.chunks] == [65536]

    transport.writeSequence([b"y" * 700_000])  # queued, as when the kernel said EAGAIN
    assert not producer.paused  # 64 KiB, Twisted's bound, would have paused it
    transport.writeSequence([b"y" * 400_000])
    assert producer.paused


@pytest.fixture
def tls_options(server_cert):
    """The daemon's own TLS options (chatd.tls) for the test CA's certificate."""
    chain, key = server_cert
    tls = replace(load_config(None).tls, certificate=chain, key=key)
    return server_options(tls, "test", datetime.now(UTC))


def test_tls_started_on_the_connection_itself_is_never_bypassed(pair, monkeypatch, tls_options):
    """After startTLS the socket carries ciphertext: writes must go through the TLS layer."""
    transport, peer, reactor = pair
    monkeypatch.setattr(tls, "_get_default_clock", lambda: reactor)  # Twisted's test hook
    transport.startTLS(tls_options)
    transport.write(b"plaintext must not reach the socket")
    reactor.advance(0)
    assert b"plaintext" not in received(peer)


class Recorder(Protocol):
    def connectionMade(self):
        self.factory.made.append(self)


@pytest.fixture
def accept():
    """Listen on an endpoint, connect to it, accept: the server-side protocol."""
    sockets = []

    def accept(endpoint) -> Protocol:
        factory = Factory.forProtocol(Recorder)
        factory.made = []
        port = endpoint.listen(factory).result
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        port.doRead()
        [made] = factory.made
        tcp = made.transport
        if isinstance(tcp, tls.TLSMemoryBIOProtocol):
            tcp = tcp.transport
        sockets.extend([client, port.socket, tcp.socket])
        return made

    accept.sockets = sockets
    yield accept
    for each in sockets:
        each.close()


def test_the_tcp_endpoint_accepts_send_now_connections(accept):
    made = accept(sendnow.TCPServerEndpoint(MemoryReactorClock(), 0, "127.0.0.1"))
    assert type(made.transport) is sendnow.SendNowServer


def test_accepted_connections_have_nagle_off_from_the_listening_socket(accept):
    made = accept(sendnow.TCPServerEndpoint(MemoryReactorClock(), 0, "127.0.0.1"))
    assert made.transport.getTcpNoDelay()  # nobody asked the connection: it was inherited
    made.transport.setTcpNoDelay(False)  # Nagle can still be turned back on, and off again
    assert not made.transport.getTcpNoDelay()
    made.transport.setTcpNoDelay(True)
    assert made.transport.getTcpNoDelay()


class Watched:
    """A socket that notes which of its methods are called."""

    def __init__(self, skt: socket.socket):
        self._socket = skt
        self.called = []

    def __getattr__(self, name):
        self.called.append(name)
        return getattr(self._socket, name)


def test_closing_skips_shutdown_and_the_peer_sees_an_orderly_end(accept):
    made = accept(sendnow.TCPServerEndpoint(MemoryReactorClock(), 0, "127.0.0.1"))
    transport = made.transport
    peer = transport.getPeer()
    client = next(s for s in accept.sockets if s.getsockname() == (peer.host, peer.port))
    transport.socket = watched = Watched(transport.socket)
    transport.loseConnection()
    transport.connectionLost(Failure(main.CONNECTION_DONE))  # as the reactor, the queue empty
    assert "close" in watched.called and "shutdown" not in watched.called
    client.settimeout(5)
    assert client.recv(10) == b""  # end of stream, not a reset


def test_the_tls_endpoint_puts_tls_over_send_now_connections(accept, tls_options):
    tcp = sendnow.TCPServerEndpoint(MemoryReactorClock(), 0, "127.0.0.1")
    made = accept(sendnow.TLSServerEndpoint(tcp, tls_options))
    # Twisted's plain TLS transport, not the one that defers each write to a timer of its own
    assert type(made.transport) is sendnow.TLSServerProtocol
    assert type(made.transport).__mro__[1] is tls.TLSMemoryBIOProtocol
    assert type(made.transport.transport) is sendnow.SendNowServer


def test_the_tls_transport_declares_what_twisteds_own_declares(accept, tls_options):
    """TLSServerProtocol.makeConnection skips a loop of declarations Twisted throws away: the
    interfaces the transport provides, and the connection made, are as with Twisted's own."""
    ours = accept(
        sendnow.TLSServerEndpoint(
            sendnow.TCPServerEndpoint(MemoryReactorClock(), 0, "127.0.0.1"), tls_options
        )
    )
    twisteds_factory = tls.TLSMemoryBIOFactory(tls_options, False, Factory.forProtocol(Recorder))
    twisteds_factory.protocol = tls.TLSMemoryBIOProtocol  # what ours derives from
    twisteds_factory.wrappedFactory.made = []
    theirs = twisteds_factory.buildProtocol(None)
    theirs.makeConnection(ours.transport.transport)  # the same kind of TCP transport under it
    assert type(theirs) is tls.TLSMemoryBIOProtocol
    assert list(providedBy(ours.transport)) == list(providedBy(theirs))
    assert ITCPTransport.providedBy(ours.transport)
    assert ours.transport.wrappedProtocol is ours and ours.transport._tlsConnection is not None
    assert twisteds_factory.wrappedFactory.made[0].transport is theirs


# -- out of file descriptors ---------------------------------------------------------------------


class ListeningSocket:
    """The port's real listening socket, whose accept() fails with `error` while it is set:
    the one OS call a test cannot make fail on demand without starving the whole process."""

    def __init__(self, real: socket.socket):
        self._real = real
        self.error: int | None = None
        self.attempts = 0

    def accept(self):
        self.attempts += 1
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        return self._real.accept()

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def starved():
    """(port, listening socket, reactor, factory, connect): a SendNowPort on a real socket."""
    reactor = MemoryReactorClock()
    factory = Factory.forProtocol(Recorder)
    factory.made = []
    port = sendnow.TCPServerEndpoint(reactor, 0, "127.0.0.1").listen(factory).result
    listening = ListeningSocket(port.socket)
    port.socket = listening
    clients = []

    def connect():
        clients.append(socket.create_connection(("127.0.0.1", port.getHost().port)))

    yield port, listening, reactor, factory, connect
    for each in [*clients, *(made.transport.socket for made in factory.made)]:
        each.close()
    if port.connected:
        port.socket = listening._real
        port.connectionLost(None)


def run_reactor(reactor, port, seconds: float, step: float = 0.01) -> None:
    """What the reactor does for `seconds`: call doRead while the port is reading (its
    socket stays readable: a client is waiting) and run the timers."""
    for _ in range(round(seconds / step)):
        if port in reactor.getReaders():
            port.doRead()
        reactor.advance(step)


@pytest.mark.parametrize("error", [errno.EMFILE, errno.ENFILE])
def test_out_of_descriptors_the_port_backs_off_logs_little_and_resumes(starved, log_events, error):
    port, listening, reactor, factory, connect = starved
    connect()
    listening.error = error
    run_reactor(reactor, port, 25.0)
    # 0.1 + 0.2 + 0.4 + 0.8, then every second: about 25 attempts in 25 s, not a busy loop
    assert 20 <= listening.attempts <= 30
    lines = [event for event in log_events if event.get("log_namespace", "").startswith("chatd")]
    assert [event["log_level"].name for event in lines] == ["warn", "warn", "warn"]
    assert errno.errorcode[error] in lines[0]["error"] and "LimitNOFILE" in lines[0]["log_format"]
    assert 10 <= lines[1]["refused"] <= 14  # one line per 10 s, with the count
    assert factory.made == []

    refused = listening.attempts
    listening.error = None  # descriptors were freed: the waiting client is accepted
    log_events.clear()
    run_reactor(reactor, port, 1.1)
    assert len(factory.made) == 1
    assert type(factory.made[0].transport) is sendnow.SendNowServer
    [recovered] = [event for event in log_events if "again" in event.get("log_format", "")]
    assert recovered["refused"] == refused
    connect()
    port.doRead()  # and accepting goes on as usual
    assert len(factory.made) == 2


def test_stopping_the_port_cancels_its_pending_resume(starved):
    port, listening, reactor, _factory, connect = starved
    connect()
    listening.error = errno.EMFILE
    port.doRead()
    assert reactor.getDelayedCalls()
    port.socket = listening._real
    port.connectionLost(None)
    assert not [call for call in reactor.getDelayedCalls() if call.active()]


def test_a_listen_backlog_the_kernel_allows_is_kept(tmp_path, log_events):
    somaxconn = tmp_path / "somaxconn"
    somaxconn.write_text("4096\n")
    assert sendnow.listen_backlog(1024, somaxconn) == 1024
    assert not [e for e in log_events if e.get("log_level").name == "warn"]


def test_a_listen_backlog_over_somaxconn_is_capped_with_a_warning(tmp_path, log_events):
    somaxconn = tmp_path / "somaxconn"
    somaxconn.write_text("128\n")
    assert sendnow.listen_backlog(1024, somaxconn) == 128
    [warning] = [e for e in log_events if e.get("log_level").name == "warn"]
    assert (warning["wanted"], warning["cap"]) == (1024, 128)


def test_without_somaxconn_the_backlog_asked_for_is_used(tmp_path):
    assert sendnow.listen_backlog(777, tmp_path / "absent") == 777


def test_tcp_of_finds_the_send_now_connection_under_tls_or_none(accept, tls_options):
    plain = accept(sendnow.TCPServerEndpoint(MemoryReactorClock(), 0, "127.0.0.1"))
    tcp = sendnow.TCPServerEndpoint(MemoryReactorClock(), 0, "127.0.0.1")
    secure = accept(sendnow.TLSServerEndpoint(tcp, tls_options))
    assert sendnow.tcp_of(plain.transport) is plain.transport
    assert sendnow.tcp_of(secure.transport) is secure.transport.transport
    assert sendnow.tcp_of(object()) is None
