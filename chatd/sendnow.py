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

import errno
import os

from twisted.internet import defer, tcp
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
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


# accept() failing for want of a resource: descriptors (the process's, the system's), memory.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _Listener:
    """The listening socket as Twisted's accept loop sees it: running out of descriptors
    reads as "no more clients" (EAGAIN), so that Twisted neither logs it nor retries it,
    and is noted for `SendNowPort` to back off."""

    def __init__(self, sock):
        self._socket = sock
        self.exhausted: int | None = None

    def accept(self):
        try:
            return self._socket.accept()
        except OSError as error:
            if error.errno not in _EXHAUSTED:
                raise
            self.exhausted = error.errno
            raise OSError(errno.EAGAIN, "accept paused") from None


class SendNowPort(tcp.Port):
    """Twisted's TCP port, accepting `SendNowServer` connections, that backs off when it runs
    out of file descriptors.

    At the descriptor limit, accept() fails at once while the listening socket stays
    readable: Twisted logs the failure and the reactor calls again at once, a busy loop
    (measured at 98% CPU and 355,925 log lines in 10 s). Instead this port stops reading its
    socket for a back-off (0.1 s, doubling to 1 s, on the port's reactor clock); waiting
    clients stay in the kernel's backlog meanwhile. It logs when accepting first fails, then
    at most every `LOG_EVERY` seconds with the count of refused attempts, and once when it
    accepts again.
    """

    transport = SendNowServer
    FIRST_BACKOFF = 0.1
    MAX_BACKOFF = 1.0
    LOG_EVERY = 10.0

    _log = Logger()
    _resume_call = None
    _refused = 0  # failed accepts since the last log line
    _refused_total = 0  # ... and since accepting last worked
    _failing_since: float | None = None
    _logged_at = 0.0
    _backoff = FIRST_BACKOFF

    def doRead(self):
        listener = _Listener(self.socket)
        self.socket = listener
        try:
            super().doRead()
        finally:
            self.socket = listener._socket
        if listener.exhausted is not None:
            self._pause(listener.exhausted)
        elif self._failing_since is not None:
            self._recovered()

    def _pause(self, error: int) -> None:
        now = self.reactor.seconds()
        self._refused += 1
        self._refused_total += 1
        if self._failing_since is None:
            self._failing_since = now
            self._backoff = self.FIRST_BACKOFF
            self._logged_at = now
            self._refused = 0
            self._log.warn(
                "cannot accept connections on {address}: {error}; pausing accepts, retrying"
                " after {backoff:g}s, up to every {max:g}s. Raise the open-file limit"
                " (LimitNOFILE= in the systemd unit, ulimit -n) or lower"
                " [limits] max_connections",
                address=_where(self),
                error=f"{errno.errorcode[error]} ({os.strerror(error)})",
                backoff=self._backoff,
                max=self.MAX_BACKOFF,
            )
        elif now - self._logged_at >= self.LOG_EVERY:
            self._log.warn(
                "still cannot accept connections on {address} ({error}): {refused} attempts"
                " refused in the last {seconds:.0f}s",
                address=_where(self),
                error=errno.errorcode[error],
                refused=self._refused,
                seconds=now - self._logged_at,
            )
            self._logged_at = now
            self._refused = 0
        self.stopReading()
        self._resume_call = self.reactor.callLater(self._backoff, self._resume)
        self._backoff = min(self._backoff * 2, self.MAX_BACKOFF)

    def _resume(self) -> None:
        self._resume_call = None
        if self.connected and not self.disconnecting:
            self.startReading()

    def _recovered(self) -> None:
        self._log.info(
            "accepting connections on {address} again after {seconds:.1f}s and {refused}"
            " refused attempts",
            address=_where(self),
            seconds=self.reactor.seconds() - self._failing_since,
            refused=self._refused_total,
        )
        self._failing_since = None
        self._refused = self._refused_total = 0

    def connectionLost(self, reason):
        if self._resume_call is not None and self._resume_call.active():
            self._resume_call.cancel()
        self._resume_call = None
        super().connectionLost(reason)


def _where(port: tcp.Port) -> str:
    address = port.getHost()
    return f"{address.host}:{address.port}"


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
