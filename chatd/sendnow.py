"""Send to a TCP socket at once when the transport has nothing queued.

Twisted's `transport.write` only queues: the reactor sends on its next turn, after registering
the socket for writability and before unregistering it again, two `epoll_ctl` calls around
every `send`. Fanning one small frame out to a thousand members, those calls cost half as much
again as the sends themselves (the profile is in BENCHMARKS.md). asyncio and Node try the
`send` first and queue only what the kernel did not take; so does `write` here.

Only a plain TCP transport qualifies; TLS and in-memory transports keep `transport.write`.
"""

from __future__ import annotations

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.tcp import Connection


def can_send_now(transport) -> bool:
    """A plain TCP connection. TLS through an endpoint wraps the connection in another
    transport, but TLS started on the connection itself (`listenSSL`, `startTLS`) keeps its
    class: its socket carries ciphertext and must never be written to directly."""
    return isinstance(transport, Connection) and not ISSLTransport.providedBy(transport)


def write(transport: Connection, data: bytes) -> None:
    """Like `transport.write(data)`, in the same order, but sent now if nothing is ahead of it.

    What the kernel does not take, and anything written while earlier data is still queued
    (so also while the transport's producer is paused), goes through `transport.write`: the
    transport's own buffer, flow control and error handling stay in charge.
    """
    if (
        transport.dataBuffer  # Twisted's queue: its main buffer ...
        or transport._tempDataLen  # ... and the writes appended since
        or not transport.connected
        or transport.disconnecting
    ):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except OSError:
        # The buffer is full (EAGAIN), or the connection is gone: Twisted's next attempt to
        # write meets the same error and loses the connection the usual way.
        sent = 0
    if sent < len(data):
        transport.write(data[sent:] if sent else data)
