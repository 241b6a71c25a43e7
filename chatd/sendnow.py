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

import errno
import os
import socket
from pathlib import Path

from twisted.internet import defer, tcp
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
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
    pause_over = 65536  # bytes queued beyond which the producer is paused (Backlog.pause_over)

    def _isSendBufferFull(self) -> bool:
        # Twisted compares the queue with `bufferSize`, which is also how much each recv()
        # asks for. Raising it to pause later made every read allocate the larger size: at
        # 1 MiB, past malloc's mmap threshold, each read cost mmap, mremap and munmap besides
        # the recv. Reads stay at Twisted's 64 KiB; the pause has its own bound.
        return len(self.dataBuffer) + self._tempDataLen > self.pause_over

    # Twisted calls shutdown() before close(), to be safe, it says, though the descriptor is
    # this process's alone (close-on-exec): after a peer's reset or close, as with nearly every
    # client leaving, it fails with ENOTCONN, a system call per connection for nothing. close()
    # alone ends the connection the same way.
    _shouldShutdown = False

    _nodelay_changed = False  # set on the socket since: the inherited option may not hold

    def setTcpNoDelay(self, enabled: bool) -> None:
        # A connection SendNowPort accepted has Nagle off already: it inherits the listening
        # socket's option. Turning Nagle off again would be a setsockopt per handshake.
        if enabled and not self._nodelay_changed and isinstance(self.server, SendNowPort):
            return
        self._nodelay_changed = True
        super().setTcpNoDelay(enabled)

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
        tcp = tcp_of(transport)
        if tcp is None:
            return None
        return cls(tcp, transport if transport is not tcp else None)

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
        self._tcp.pause_over = size


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

    def createInternetSocket(self):
        """Twisted's listening socket, with Nagle off: chat frames and pages are small and
        wanted at once, and each accepted connection inherits the option."""
        skt = super().createInternetSocket()
        skt.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return skt

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


SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
log = Logger()


def listen_backlog(wanted: int, somaxconn: Path = SOMAXCONN) -> int:
    """The backlog listen(2) will give: `wanted`, or less with a warning when the kernel caps
    it (net.core.somaxconn), since after a restart every client comes back at once and a short
    queue drops their SYNs (they retry only after a second)."""
    try:
        cap = int(somaxconn.read_text())
    except (OSError, ValueError):
        return wanted
    if cap < wanted:
        log.warn(
            "[limits] listen_backlog = {wanted}, but the kernel caps it at {cap}"
            " (sysctl net.core.somaxconn): connections beyond that in one burst wait a second"
            " to retry. Raise net.core.somaxconn to at least {wanted}",
            wanted=wanted,
            cap=cap,
        )
        return cap
    return wanted


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


def tcp_of(transport) -> SendNowServer | None:
    """The send-now TCP connection under a protocol's `transport` (itself, or under TLS)."""
    if isinstance(transport, TLSMemoryBIOProtocol):
        transport = transport.transport
    return transport if isinstance(transport, SendNowServer) else None


class TLSServerProtocol(TLSMemoryBIOProtocol):
    """Twisted's TLS transport, letting go of unencrypted writes when the connection is lost."""

    def makeConnection(self, transport) -> None:
        """Twisted's, without a loop whose work is thrown away: it first declares, one at a
        time, that this wrapper provides each interface of the TCP transport (each declaration
        replacing the last, a zope.interface spec built for each: 5% of a wss handshake),
        then `ProtocolWrapper.makeConnection` declares them all at once. That second step, and
        the rest, are kept as they are (a server's wrapped protocol is always connected)."""
        self._tlsConnection = self.factory._creatorCallable(self)
        self._appSendBuffer = []
        ProtocolWrapper.makeConnection(self, transport)
        self._checkHandshakeStatus()

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
