"""SendNowServer on a real socket pair, and the listeners' endpoints on real sockets, with a
MemoryReactor standing in only for the reactor's reader and writer registries (no global
reactor, no reactor run)."""

import socket
from dataclasses import replace

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols import tls

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


@pytest.fixture
def tls_options(server_cert):
    """The daemon's own TLS options (chatd.tls) for the test CA's certificate."""
    chain, key = server_cert
    return server_options(replace(load_config(None).tls, certificate=chain, key=key), "test")


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

    yield accept
    for each in sockets:
        each.close()


def test_the_tcp_endpoint_accepts_send_now_connections(accept):
    made = accept(sendnow.TCPServerEndpoint(MemoryReactorClock(), 0, "127.0.0.1"))
    assert type(made.transport) is sendnow.SendNowServer


def test_the_tls_endpoint_puts_tls_over_send_now_connections(accept, tls_options):
    tcp = sendnow.TCPServerEndpoint(MemoryReactorClock(), 0, "127.0.0.1")
    made = accept(sendnow.TLSServerEndpoint(tcp, tls_options))
    # Twisted's plain TLS transport, not the one that defers each write to a timer of its own
    assert type(made.transport) is sendnow.TLSServerProtocol
    assert type(made.transport).__mro__[1] is tls.TLSMemoryBIOProtocol
    assert type(made.transport.transport) is sendnow.SendNowServer
