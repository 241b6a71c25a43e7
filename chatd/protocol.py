"""The WebSocket protocol: decode a frame, dispatch to `handle_<type>`, answer errors in words.

Thin on purpose, like the mailbox server's `server_websocket.py`: every rule lives in the
broadcaster and the wire module; this class only moves bytes and maps failures to frames.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from chatd import wire
from chatd.broadcaster import Broadcaster, Refused, Session

CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INTERNAL_ERROR = 1011


def prepare_frame(payload: bytes) -> PreparedMessage:
    """One unmasked text frame for all members; we never negotiate compression."""
    return PreparedMessage(payload, isBinary=False, applyMask=False, doNotCompress=True)


class ChatServerProtocol(WebSocketServerProtocol):
    # Autobahn owns `.log`; ours is `_log`.
    _log = Logger()

    session: Session | None = None
    peer_address = "?"

    def connectionMade(self):
        super().connectionMade()
        # Autobahn tries this before it copies the factory's options, so accepted sockets
        # would keep Nagle on (~7 ms more fan-out latency, measured): set it ourselves.
        self.transport.setTcpNoDelay(True)

    def onConnect(self, request):
        self.peer_address = request.peer
        return None

    def onOpen(self):
        self.factory.live.add(self)
        self.factory.handshakes.inc()
        self._log.info(
            "{peer} connected on {listener}", peer=self.peer_address, listener=self.factory.name
        )

    def failHandshake(self, reason, code=400, responseHeaders=None):
        self.factory.handshake_failures.inc()
        super().failHandshake(reason, code, responseHeaders)

    def onClose(self, wasClean, code, reason):
        if self not in self.factory.live:
            return  # the opening handshake never completed; Autobahn logged why
        self.factory.broadcaster.metrics.closes.labels(str(code)).inc()
        if self.session is not None:
            self.factory.broadcaster.disconnect(self.session)
        self.factory.closed(self)
        self._log.info(
            "{peer} ({user}) disconnected from {listener}: close code {code} {reason}",
            peer=self.peer_address,
            user=self.session.user if self.session else "no hello",
            listener=self.factory.name,
            code=code,
            reason=reason or "",
        )

    def onMessage(self, payload, isBinary):
        if isBinary:
            self._log.info("{peer} sent a binary frame; closing with 1003", peer=self.peer_address)
            self.close_with(
                CLOSE_UNSUPPORTED_DATA, "binary frames are not accepted; send JSON text"
            )
            return
        ref = None
        try:
            frame = self.factory.parser.parse(payload)
            ref = frame.ref
            self._dispatch(frame)
        except (wire.ProtocolError, Refused) as error:
            self.factory.broadcaster.metrics.errors.labels(error.code).inc()
            self.send(wire.error(error.code, error.message, getattr(error, "ref", None) or ref))
        except Exception:
            self._log.failure("internal error serving {peer}", peer=self.peer_address)
            self.close_with(CLOSE_INTERNAL_ERROR, "internal server error")

    def _dispatch(self, frame: wire.ClientFrame) -> None:
        if self.session is None and not isinstance(frame, wire.Hello):
            raise wire.ProtocolError(wire.HELLO_REQUIRED, "say hello first", frame.ref)
        getattr(self, "handle_" + frame.type)(frame)

    # -- handlers -----------------------------------------------------------------------------

    def handle_hello(self, frame: wire.Hello) -> None:
        if self.session is not None:
            raise wire.ProtocolError(
                wire.ALREADY_WELCOMED, f"already welcomed as {self.session.user}", frame.ref
            )
        self.session = self.factory.broadcaster.hello(self, frame.name)
        self._log.info("{peer} is {user}", peer=self.peer_address, user=frame.name)
        self.send(wire.welcome(frame.name, self.factory.parser.max_text_chars))

    def handle_join(self, frame: wire.Join) -> None:
        self.send(self.factory.broadcaster.join(self.session, frame))

    def handle_leave(self, frame: wire.Leave) -> None:
        self.factory.broadcaster.leave(self.session, frame.room)
        self.send(wire.left(frame.room, frame.ref))

    def handle_say(self, frame: wire.Say) -> None:
        self.factory.broadcaster.say(self.session, frame)

    def handle_who(self, frame: wire.Who) -> None:
        self.send(self.factory.broadcaster.who(frame))

    def handle_history(self, frame: wire.History) -> None:
        self.send(self.factory.broadcaster.history(frame))

    def close_with(self, code: int, reason: str) -> None:
        """Start the closing handshake with a protocol-level code (1003, 1008, 1011, ...).

        Autobahn's sendClose only takes 1000 and 3000-4999, the codes an application may
        choose; the RFC 6455 codes for protocol failures go through sendCloseFrame.
        """
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:123], isReply=False)

    # -- the broadcaster's Connection ---------------------------------------------------------

    def send(self, payload: bytes) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendMessage(payload, isBinary=False)

    def send_prepared(self, frame: PreparedMessage) -> None:
        # Straight to the transport: sendPreparedMessage's path through sendData costs a
        # formatted debug log call per delivery (fan-out ~5x slower, measured).
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.transport.write(frame.payloadHybi)


class ChatServerFactory(WebSocketServerFactory):
    """One per listener (Autobahn's origin check reads the factory's URL).

    It keeps its open connections, to count them and to say goodbye to them at shutdown.
    """

    protocol = ChatServerProtocol

    def __init__(
        self,
        name: str,
        url: str,
        broadcaster: Broadcaster,
        parser: wire.FrameParser,
        max_message_bytes: int,
    ):
        super().__init__(url)
        self.name = name
        self.broadcaster = broadcaster
        self.parser = parser
        self.live: set[ChatServerProtocol] = set()
        self._drained: Deferred | None = None
        metrics = broadcaster.metrics
        metrics.connections.labels(name).set_function(lambda: len(self.live))
        self.handshakes = metrics.handshakes.labels(name)
        self.handshake_failures = metrics.handshake_failures.labels(name)
        self.setProtocolOptions(
            maxFramePayloadSize=max_message_bytes,
            maxMessagePayloadSize=max_message_bytes,
            autoFragmentSize=0,
            tcpNoDelay=True,
            # Answer protocol violations (1007, 1009, ...) with a close frame the client can
            # read, rather than a bare TCP reset.
            failByDrop=False,
        )

    def go_away(self, clock, timeout: float) -> Deferred:
        """Close every connection with 1001 (going away), so clients reconnect and resume.

        Fires once each connection's onClose has run (so its leave events are posted), or
        after `timeout` seconds, when the rest are dropped.
        """
        if not self.live:
            return succeed(None)
        self._drained = Deferred()
        for protocol in list(self.live):
            protocol.close_with(CLOSE_GOING_AWAY, "server shutting down")

        def drop_stragglers(result):
            for protocol in list(self.live):
                protocol.dropConnection(abort=True)
            return result

        self._drained.addTimeout(timeout, clock, onTimeoutCancel=lambda result, _timeout: None)
        return self._drained.addCallback(drop_stragglers)

    def closed(self, protocol: ChatServerProtocol) -> None:
        self.live.discard(protocol)
        if not self.live and self._drained is not None and not self._drained.called:
            self._drained.callback(None)
