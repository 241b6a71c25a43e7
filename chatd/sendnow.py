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
    """

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


class UnbufferedTLSFactory(TLSMemoryBIOFactory):
    """TLS that encrypts each write when it is made.

    Twisted's default TLS transport gathers small writes and encrypts them on the next reactor
    turn, scheduling one call per connection to do it. chatd already writes once per member
    per turn, so for a fan-out that is a thousand timers for nothing: without it, server CPU
    per wss delivery at 20k/s went from 28.6 to 18-21 µs (bench cpu, wss).
    """

    protocol = TLSMemoryBIOProtocol


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """TLS over another server endpoint, as `SSL4ServerEndpoint` (through `listenSSL`) puts
    it over plain TCP."""

    def __init__(self, endpoint: IStreamServerEndpoint, context_factory):
        self._endpoint = endpoint
        self._context_factory = context_factory

    def listen(self, factory) -> defer.Deferred:
        return self._endpoint.listen(UnbufferedTLSFactory(self._context_factory, False, factory))
