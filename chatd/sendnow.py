"""TCP listeners whose connections send at once when nothing is queued.

Twisted's `transport.write` only queues: the reactor sends on its next turn, after registering
the socket for writability and before unregistering it again, two `epoll_ctl` calls around
every `send`. Fanning one small frame out to a thousand members, those calls cost half as much
again as the sends themselves (the profile is in BENCHMARKS.md). asyncio and Node try the
`send` first and queue only what the kernel did not take; so does `SendNowServer.write`.

It sits at the TCP layer, so everything a listener writes takes this path: fan-out frames,
replies, pings, HTTP responses, and for wss the TLS layer's ciphertext. The listeners'
endpoints below build it; they are Twisted's TCP and TLS server endpoints with this one class
swapped in.

`Backlog` reads what such a connection still holds in this process, for the unsent-bytes budget
(protocol.py), from Twisted's write buffer and the TLS layer's; Twisted's major version is
pinned for these internals.
"""

from __future__ import annotations

from twisted.internet import defer, tcp
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer


class SendNowServer(tcp.Server):
    """An accepted TCP connection whose writes are sent at once when nothing is ahead of them.

    What the kernel does not take, and anything written while earlier data is still queued
    (so also while the transport's producer is paused), goes through Twisted's own `write`:
    its buffer, flow control and error handling stay in charge. TLS started on the connection
    itself (`startTLS`) also goes through Twisted: the socket then carries ciphertext.

    `drained` counts the bytes sent from Twisted's buffer (not those sent at once): how far the
    peer has read into what was queued, for `Backlog`. When the connection is lost, whatever is
    still queued is let go at once, not when the protocol (and the cycles it may be in) is
    collected.
    """

    drained = 0
    drained_at = 0.0  # when the kernel last took some of the queue

    def writeSomeData(self, data):
        # Called by Twisted's doWrite only: the queued path, never the one that sends at once.
        sent = super().writeSomeData(data)
        if type(sent) is int and sent:
            self.drained += sent
            self.drained_at = self.reactor.seconds()
        return sent

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataBuffer = []
        self._tempDataLen = 0

    def write(self, data: bytes) -> None:
        if (
            self.TLS
            or self.dataBuffer  # Twisted's queue: its main buffer ...
            or self._tempDataLen  # ... and the writes appended since
            or not self.connected
            or self.disconnecting
        ):
            super().write(data)
            return
        try:
            sent = self.socket.send(data)
        except OSError:
            # The buffer is full (EAGAIN), or the connection is gone: Twisted's next attempt to
            # write meets the same error and loses the connection the usual way.
            sent = 0
        if sent < len(data):
            super().write(data[sent:] if sent else data)


class Backlog:
    """What a `SendNowServer` connection (under TLS or not) holds of what was written to it:
    Twisted's write buffer, plus the cleartext the TLS layer could not encrypt yet."""

    __slots__ = ("_tcp", "_tls")

    def __init__(self, tcp: SendNowServer, tls: TLSMemoryBIOProtocol | None = None):
        self._tcp = tcp
        self._tls = tls

    @classmethod
    def of(cls, transport) -> Backlog | None:
        """The backlog of a protocol's `transport`; None for transports of other kinds."""
        if isinstance(transport, TLSMemoryBIOProtocol):
            tls, transport = transport, transport.transport
        else:
            tls = None
        return cls(transport, tls) if isinstance(transport, SendNowServer) else None

    def queued(self) -> int:
        """Bytes written and not yet handed to the kernel."""
        tcp = self._tcp
        queued = len(tcp.dataBuffer) - tcp.offset + tcp._tempDataLen
        tls = self._tls
        if tls is not None and tls._appSendBuffer:
            queued += sum(map(len, tls._appSendBuffer))
        return queued

    @property
    def drained(self) -> int:
        """Bytes handed to the kernel from the queue so far: it grows as the peer reads."""
        return self._tcp.drained

    @property
    def drained_at(self) -> float:
        """When the kernel last took some of the queue (the reactor's time)."""
        return self._tcp.drained_at

    def pause_over(self, size: int) -> None:
        """Have the transport pause its producer once more than `size` bytes are queued
        (Twisted's default is 64 KiB)."""
        self._tcp.bufferSize = size


class SendNowPort(tcp.Port):
    transport = SendNowServer


@implementer(IStreamServerEndpoint)
class TCPServerEndpoint:
    """`TCP4ServerEndpoint`, accepting `SendNowServer` connections."""

    def __init__(self, reactor, port: int, interface: str = "", backlog: int = 50):
        self._reactor = reactor
        self._port = port
        self._interface = interface
        self._backlog = backlog

    def listen(self, factory) -> defer.Deferred:
        return defer.execute(self._listen, factory)

    def _listen(self, factory) -> SendNowPort:
        port = SendNowPort(self._port, factory, self._backlog, self._interface, self._reactor)
        port.startListening()
        return port


class TLSServerProtocol(TLSMemoryBIOProtocol):
    """Twisted's TLS transport, letting go of unencrypted writes when the connection is lost."""

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self._appSendBuffer = []


class UnbufferedTLSFactory(TLSMemoryBIOFactory):
    """TLS that encrypts each write when it is made.

    Twisted's default TLS transport gathers small writes and encrypts them on the next reactor
    turn, scheduling one call per connection to do it. chatd already writes once per member
    per turn, so for a fan-out that is a thousand timers for nothing: without it, server CPU
    per wss delivery at 20k/s went from 28.6 to 18-21 µs (bench cpu, wss).
    """

    protocol = TLSServerProtocol


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """TLS over another server endpoint, as `SSL4ServerEndpoint` (through `listenSSL`) puts
    it over plain TCP."""

    def __init__(self, endpoint: IStreamServerEndpoint, context_factory):
        self._endpoint = endpoint
        self._context_factory = context_factory

    def listen(self, factory) -> defer.Deferred:
        return self._endpoint.listen(UnbufferedTLSFactory(self._context_factory, False, factory))
