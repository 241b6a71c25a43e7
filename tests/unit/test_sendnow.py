"""sendnow.write on a real Twisted TCP transport (an accepted-socket `tcp.Server`) over a real
socket pair, with a MemoryReactor standing in only for the reactor's reader and writer
registries (no global reactor)."""

import socket

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Server
from twisted.internet.testing import MemoryReactor

from chatd import sendnow


@pytest.fixture
def pair():
    """(transport, peer): a connected Twisted TCP transport and the raw socket at the far end."""
    ours, peer = socket.socketpair()
    reactor = MemoryReactor()
    transport = Server(ours, Protocol(), ("127.0.0.1", 40000), None, 1, reactor)
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
    sendnow.write(transport, b"hello")
    assert received(peer) == b"hello"
    assert transport not in reactor.getWriters()
    assert (transport.dataBuffer, transport._tempDataLen) == (b"", 0)


def test_data_queued_by_the_transport_goes_first(pair):
    transport, peer, reactor = pair
    transport.write(b"first ")
    sendnow.write(transport, b"second")
    assert received(peer) == b""  # nothing jumped the queue
    assert transport in reactor.getWriters()
    transport.doWrite()
    assert received(peer) == b"first second"


def test_what_the_kernel_does_not_take_is_queued_in_order(pair):
    transport, peer, reactor = pair
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    blob = bytes(range(256)) * 4096  # 1 MiB: far more than the socket buffer holds
    sendnow.write(transport, blob)
    got = received(peer)
    assert 0 < len(got) < len(blob)  # the kernel took some at once ...
    assert transport._tempDataLen == len(blob) - len(got)  # ... and Twisted queued the rest
    assert transport in reactor.getWriters()
    sendnow.write(transport, b"after")
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
        sendnow.write(transport, b"x" * 100_000)
    assert transport in reactor.getWriters()
    assert isinstance(transport.doWrite(), Exception)  # connection lost, Twisted's way


def test_tls_and_in_memory_transports_do_not_qualify(pair):
    from twisted.internet.testing import StringTransport

    transport, _peer, _reactor = pair
    assert sendnow.can_send_now(transport)
    assert not sendnow.can_send_now(StringTransport())


def test_tls_started_on_the_connection_itself_is_never_bypassed(pair):
    """listenSSL and startTLS keep the Connection class; its socket then carries ciphertext."""
    import trustme
    from twisted.internet.ssl import CertificateOptions

    transport, _peer, _reactor = pair
    assert sendnow.can_send_now(transport)
    certificate = trustme.CA().issue_cert("127.0.0.1")
    options = CertificateOptions(
        privateKey=serialization.load_pem_private_key(
            certificate.private_key_pem.bytes(), password=None
        ),
        certificate=x509.load_pem_x509_certificate(certificate.cert_chain_pems[0].bytes()),
    )
    transport.startTLS(options)
    assert not sendnow.can_send_now(transport)
