"""A listener's front door: an opening handshake for /ws goes straight to Autobahn, anything
else to twisted.web.

Through twisted.web alone, every WebSocket connection was parsed twice: twisted.web built a
channel, a request and its headers, walked the resources to /ws, and Autobahn's
`WebSocketResource` then wrote the request back out for Autobahn to parse again, leaving a
channel-request cycle behind for the collector. That was about a third of chatd's CPU per
handshake (BENCHMARKS.md, issue 16). Here the request line alone decides: a request for /ws
(exactly the paths `WebSocketResource` served) is Autobahn's from its first byte, and it
validates the rest of the handshake as before; pages, /healthz and /metrics are twisted.web's
as before. Either way the connection keeps one absolute deadline for its request, counted from
the moment it was accepted (`ChatServerFactory.opening`): a /ws connection keeps it until the
chat protocol has opened it, and twisted.web's channel gets what is left of it.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import implementer

# A request line longer than this is twisted.web's to refuse (it allows 16 KiB).
MAX_REQUEST_LINE = 16384


def is_websocket_request(line: bytes) -> bool:
    """Whether a request line asks for /ws, with or without a query or further segments
    (`WebSocketResource` is a leaf: it served /ws/anything)."""
    return line.startswith(b"GET /ws") and line[7:8] in (b" ", b"?", b"/")


@implementer(IProtocolNegotiationFactory)
class FrontDoor(ServerFactory):
    """The factory a chat listener listens with: it hands each connection over once its request
    line is in, and drops those not open by the WebSocket factory's deadline (`opening`:
    `[limits] handshake_timeout` from their accept)."""

    def __init__(self, websocket_factory, site):
        self.websocket_factory = websocket_factory
        self.site = site
        # Connections by transport, from their accept until their request line is in (pages)
        # or the chat protocol has opened them (/ws); those still there at the deadline are
        # dropped.
        self.opening = websocket_factory.opening

    def doStart(self):
        # twisted.web's access log and its once-a-second log clock start when it listens.
        self.site.doStart()

    def doStop(self):
        self.site.doStop()

    def buildProtocol(self, addr):
        return Doorway(self, addr)

    def acceptableProtocols(self) -> list[bytes]:
        """What TLS offers in ALPN: twisted.web's protocols. Twisted asks the factory the TLS
        layer wraps; without an answer, a browser's TLS handshake ends in an internal error."""
        return self.site.acceptableProtocols()


class Doorway(Protocol):
    """A connection until its request line is in; then the protocol that serves the request
    takes the transport over and is handed the bytes read so far."""

    def __init__(self, door: FrontDoor, address):
        self._door = door
        self._address = address
        self._head = b""

    def connectionMade(self):
        self._door.opening.set(self.transport)

    def dataReceived(self, data):
        head = self._head + data
        end = head.find(b"\r\n")
        if end < 0 and len(head) <= MAX_REQUEST_LINE:
            self._head = head
            return
        self._head = b""
        door = self._door
        transport = self.transport
        if end >= 0 and is_websocket_request(head[:end]):
            # The deadline stays the door's until the chat protocol has opened the connection.
            protocol = door.websocket_factory.buildProtocol(self._address)
        else:
            protocol = door.site.buildProtocol(self._address)
            protocol.deadline = max(door.opening.meet(transport), 0.001)
        if isinstance(transport, ProtocolWrapper):  # TLS: the connection is its wrapped one
            transport.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        protocol.dataReceived(head)

    def connectionLost(self, reason):
        self._door.opening.meet(self.transport)
