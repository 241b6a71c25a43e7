"""A listener's front door: the request line decides who serves the connection, and the
deadline for the request counts from the moment it was accepted, whoever holds it."""

import base64

import pytest
from test_web import Connection
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.python.failure import Failure

from chatd.front_door import MAX_REQUEST_LINE, Doorway, is_websocket_request
from chatd.protocol import MAX_REQUEST_HEAD, ChatServerProtocol


@pytest.fixture
def web(make_server):
    return make_server(via_site=True)


def upgrade(path: bytes) -> bytes:
    key = base64.b64encode(b"0123456789abcdef")
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("line", "websocket"),
    [
        (b"GET /ws HTTP/1.1", True),
        (b"GET /ws?token=x HTTP/1.1", True),
        (b"GET /ws/ HTTP/1.1", True),
        (b"GET /wsx HTTP/1.1", False),
        (b"GET /ws.js HTTP/1.1", False),
        (b"GET / HTTP/1.1", False),
        (b"GET /healthz HTTP/1.1", False),
        (b"POST /ws HTTP/1.1", False),
        (b"GET /WS HTTP/1.1", False),
    ],
)
def test_the_request_line_says_whether_autobahn_serves_it(line, websocket):
    assert is_websocket_request(line) is websocket


@pytest.mark.parametrize("path", [b"/ws", b"/ws?token=x", b"/ws/"])
def test_an_upgrade_for_ws_is_answered_by_the_chat_protocol(web, path):
    connection = Connection(web)
    connection.send(upgrade(path))
    assert isinstance(connection.protocol, ChatServerProtocol)
    assert connection.value().startswith(b"HTTP/1.1 101 ")
    assert web.factory.live == {connection.protocol}


def test_an_upgrade_elsewhere_is_twisted_webs(web):
    connection = Connection(web)
    connection.send(upgrade(b"/wsx"))
    assert not isinstance(connection.protocol, ChatServerProtocol | Doorway)
    assert connection.value().startswith(b"HTTP/1.1 404 ")
    assert web.factory.live == set()


def test_a_request_line_dripped_in_is_handed_over_whole(web):
    connection = Connection(web)
    for byte in upgrade(b"/ws?x=1"):
        connection.send(bytes([byte]))
    assert connection.value().startswith(b"HTTP/1.1 101 ")


def test_a_silent_connection_is_dropped_at_the_deadline_and_not_before(web, reactor):
    deadline = web.limits.handshake_timeout
    first = Connection(web)
    reactor.advance(deadline / 2)
    second = Connection(web)
    reactor.advance(deadline / 2 - 0.01)
    assert not first.disconnected
    reactor.advance(0.01)
    assert first.disconnected and not second.disconnected
    reactor.advance(deadline / 2)
    assert second.disconnected
    assert len(web.front_door.opening) == 0


def test_a_connection_handed_over_keeps_what_is_left_of_its_deadline(web, reactor):
    """The request line took most of the time: Autobahn has only the rest for the headers."""
    deadline = web.limits.handshake_timeout
    connection = Connection(web)
    reactor.advance(deadline * 0.6)
    connection.send(b"GET /ws HTTP/1.1\r\n")
    assert isinstance(connection.protocol, ChatServerProtocol)
    assert connection in web.front_door.opening  # until the chat protocol has opened it
    reactor.advance(deadline * 0.3)
    assert not connection.disconnected
    reactor.advance(deadline * 0.2)
    assert connection.disconnected
    assert not connection.value()  # dropped, as Autobahn drops an overdue handshake
    assert len(web.front_door.opening) == 0


def test_an_opened_connection_has_met_its_deadline(web, reactor):
    connection = Connection(web)
    connection.send(upgrade(b"/ws"))
    assert connection.value().startswith(b"HTTP/1.1 101 ")
    assert len(web.front_door.opening) == 0
    reactor.advance(web.limits.handshake_timeout)
    assert not connection.disconnected


def test_a_connection_lost_during_its_handshake_is_forgotten(web, reactor):
    connection = Connection(web)
    connection.send(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    connection.protocol.connectionLost(Failure(ConnectionDone()))
    assert len(web.front_door.opening) == 0


def test_a_page_request_leaves_the_deadline_to_twisted_webs_channel(web, reactor):
    deadline = web.limits.handshake_timeout
    connection = Connection(web)
    reactor.advance(deadline * 0.6)
    connection.send(b"GET /healthz HTTP/1.1\r\n")
    assert len(web.front_door.opening) == 0
    assert connection.protocol.deadline == pytest.approx(deadline * 0.4)


def test_a_connection_closed_while_waiting_is_forgotten(web, reactor):
    connection = Connection(web)
    connection.protocol.connectionLost(None)
    assert len(web.front_door.opening) == 0
    reactor.advance(web.limits.handshake_timeout)
    assert not connection.disconnected


def test_a_request_head_past_the_limit_is_refused_with_431(web):
    connection = Connection(web)
    connection.send(upgrade(b"/ws")[:-2])  # the headers, without the blank line
    padding = b"X-Pad: " + b"p" * 1000 + b"\r\n"
    while not connection.disconnecting:
        connection.send(padding)
        assert len(connection.protocol.data) <= MAX_REQUEST_HEAD + len(padding)
    assert connection.value().startswith(b"HTTP/1.1 431 ")
    assert web.factory.live == set()


def test_a_request_line_past_the_limit_is_twisted_webs_to_refuse(web):
    """twisted.web closes a connection whose line passes its limit (16 KiB), as before."""
    connection = Connection(web)
    connection.send(b"GET /ws?" + b"q" * (MAX_REQUEST_LINE - 8))
    assert isinstance(connection.protocol, Doorway)  # still waiting for the line's end
    connection.send(b"q" * 100)
    assert not isinstance(connection.protocol, ChatServerProtocol | Doorway)
    assert connection.disconnecting
    assert len(web.front_door.opening) == 0


def test_tls_offers_in_alpn_what_twisted_web_speaks(web):
    """Twisted asks the factory under TLS which protocols to offer; browsers send ALPN."""
    assert IProtocolNegotiationFactory.providedBy(web.front_door)
    assert web.front_door.acceptableProtocols() == web.site.acceptableProtocols()
    assert b"http/1.1" in web.front_door.acceptableProtocols()
