"""The WebSocket protocol: decode a frame, dispatch to `handle_<type>`, answer errors in words.

Thin on purpose, like the mailbox server's `server_websocket.py`: the rules live in the
server (server.py), the authenticator and the wire module; this class moves bytes, enforces the
per-connection limits (hello deadline, frame budgets, unsent-bytes budget) and maps failures to
error frames or close codes.
"""

from __future__ import annotations

import inspect
from collections import deque
from dataclasses import dataclass

from autobahn.twisted.util import peer2str
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import TrafficStats, WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from chatd import errors, lean, sendnow, wire
from chatd.admission import Admission
from chatd.config import LimitsConfig
from chatd.deadlines import Deadlines
from chatd.errors import ChatError
from chatd.keepalive import Keepalive
from chatd.origins import OriginPolicy
from chatd.outgoing import Deflater, Outgoing, deflate_acceptor, negotiated_window, prepare_frames
from chatd.ratelimit import TYPING_FRAMES, FrameBudget
from chatd.server import Server
from chatd.sessions import Session

CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
# However short the time behind, a backlog this many times the budget is dropped at once.
HARD_BACKLOG = 16
# Refusals at hello that end the connection (with 1008): a refused token.
FATAL_AT_HELLO = (errors.AUTH_FAILED, errors.TOKEN_EXPIRED)
# RFC 6455 5.5.2: a final, unmasked ping frame with an empty payload. Written like fan-out
# frames, not through Autobahn's sendPing, whose sendFrame path formats debug arguments:
# 40-47 -> 28 µs of server CPU per ping (bench k).
PING_FRAME = bytes([0x80 | 0x9, 0])
# The opening handshake's request head, at most (twisted.web's limit for its requests): Autobahn
# buffers until the blank line however long it takes.
MAX_REQUEST_HEAD = 16384


@dataclass(frozen=True)
class ListenerContext:
    """What every connection of one listener shares."""

    name: str
    server: Server
    parser: wire.FrameParser
    authenticator: object  # auth.OpenAuthenticator or auth.TokenAuthenticator
    limits: LimitsConfig
    hello_timeout: float
    admission: Admission
    clock: object
    log_connections: bool = False  # `[server] log_connections`: a line per session and close
    # Set when `[limits] compression` is on: the pipeline then hands out `outgoing.Outgoing`.
    deflater: Deflater | None = None


MAX_HELD_FRAMES = 64  # frames waiting for an earlier request's answer (rate-limited anyway)


@implementer(IPushProducer)
class ChatServerProtocol(WebSocketServerProtocol):
    # Autobahn owns `.log`; ours is `_log`.
    _log = Logger()

    session: Session | None = None
    peer_address = "?"
    _admitted_ip: str | None = None
    last_heard = 0.0  # when the peer last sent anything (for keepalive)
    # The unsent-bytes budget (see `_judge`): what is queued here for the peer, and since when
    # it has been behind.
    _backlog: sendnow.Backlog | None = None
    _paused = False  # the transport holds more than the budget (it paused us)
    _replies: tuple[tuple[int, int], ...] = ()  # own replies still queued: (start, end)
    _over_since: float | None = None  # when the bytes that count first went over the budget
    _progress: tuple[int, float] = (0, 0.0)  # (bytes drained, when): the peer's last read seen
    _grace_call = None
    # A request answered later (Redis mode: a room taken on first): the frames that came
    # meanwhile wait, so that each client's requests are still served in order.
    _awaiting: Deferred | None = None
    _held: deque | None = None

    def connectionMade(self):
        # Autobahn's adapter, without what only WAMP reads: its transport details (the process
        # and thread ids, two system calls, and TLS channel binding: 7% of a handshake) and a
        # debug line. Nagle off: `tcpNoDelay` is a class attribute of the listener's protocol
        # class (ChatServerFactory.setProtocolOptions).
        self.peer = peer2str(self.transport)
        self.transport.setTcpNoDelay(self.tcpNoDelay)
        self._connectionMade()
        # Learn when the peer stops reading: the transport pauses its producer when its
        # buffer fills. twisted.web's channel was that producer until Autobahn took over.
        self.transport.unregisterProducer()
        self.transport.registerProducer(self, True)
        self._backlog = sendnow.Backlog.of(self.transport)
        if self._backlog is not None:
            # Paused once over the budget: below it, fan-out costs no accounting at all.
            self._backlog.pause_over(self.factory.context.limits.max_buffered_bytes)

    # -- IPushProducer: the transport's flow control ------------------------------------------

    def pauseProducing(self):
        """The transport holds more than the budget (Twisted calls this on every write while
        it does): from now on each write is judged, and a timer judges even without writes."""
        if self._paused or self._backlog is None:
            return
        self._paused = True
        self._progress = (self._backlog.drained, self.factory.context.clock.seconds())
        self._schedule_judgement(self.factory.context.limits.slow_consumer_grace)

    def resumeProducing(self):
        """The transport sent all it held: the peer has caught up."""
        self._paused = False
        self._replies = ()
        self._over_since = None
        self._cancel_judgement()

    def stopProducing(self):
        pass

    # -- lifecycle ----------------------------------------------------------------------------

    # -- Autobahn's steps without their debug lines --------------------------------------------
    # Autobahn's Twisted adapter and server protocol wrap these steps (and connectionMade,
    # above) in `log.debug` calls whose arguments (`hltype`, `hlval` of a Failure) are
    # formatted whether or not debug is on: 4-5% of a handshake's CPU, and a call per chunk
    # read. Each override does what Autobahn's wrapper does (pinned below 27), minus the line.

    def dataReceived(self, data):
        self.last_heard = self.factory.context.clock.seconds()
        self._dataReceived(data)

    def _connectionMade(self):
        # Autobahn's sets some 35 attributes, then pretty-prints the options it copied (none:
        # the listener's class holds them) for a debug line: 3 % of a handshake. Its flags and
        # empty slots hold on the listener's class what Autobahn would set (lean.CLASS_VALUES,
        # among them `send_queue`: a tuple, not the 600-byte deque chatd never writes through,
        # and one that fails loudly if a write ever would queue); this sets what differs per
        # connection. tests/unit/test_lean.py compares the result with Autobahn's own.
        self.state = WebSocketProtocol.STATE_CONNECTING
        self.data = b""
        self.utf8validator = Utf8Validator()
        # Autobahn's traffic counters, which nothing reads: one object per listener adds them
        # up, rather than one more object and dict per connection.
        self.trafficStats = self.factory.traffic
        # No opening-handshake timer: the factory's `opening` deadlines keep it (its option is 0).
        self.factory.countConnections += 1

    def _connectionLost(self, reason):
        WebSocketProtocol._connectionLost(self, reason)
        self.factory.countConnections -= 1

    def _onOpen(self):
        # Autobahn's adapter first records the TLS channel binding and peer certificate for
        # WAMP's channel-bound authentication: a digest and a certificate lookup per wss
        # connection that chatd never reads.
        self.onOpen()

    def processHandshake(self):
        if len(self.data) > MAX_REQUEST_HEAD and b"\r\n\r\n" not in self.data[:MAX_REQUEST_HEAD]:
            self.failHandshake("request head too large", 431)
            return
        super().processHandshake()

    def onConnect(self, request):
        context = self.factory.context
        if request.origin and not self.factory.origins.allows(request.origin):
            raise ConnectionDeny(403, f"WebSocket connection denied: origin {request.origin!r}")
        self.peer_address = request.peer
        ip = self.transport.getPeer().host
        refusal = context.admission.admit(ip)
        if refusal is not None:
            code, reason = refusal
            self.factory.handshake_failures.inc()
            self._log.warn(
                "refused {peer} on {listener} with HTTP {code}: {reason}",
                peer=self.peer_address,
                listener=context.name,
                code=code,
                reason=reason,
            )
            raise ConnectionDeny(code, reason)
        self._admitted_ip = ip
        return None

    def onOpen(self):
        factory = self.factory
        context = factory.context
        factory.opening.meet(self.transport)
        lean.compact(self)
        tcp = sendnow.tcp_of(self.transport)
        if tcp is not None:
            lean.settle(tcp)
        factory.live.add(self)
        factory.handshakes.inc()
        self._budget = FrameBudget(context.limits, context.clock.seconds())
        factory.hellos.set(self)
        if factory.keepalive is not None:
            factory.keepalive.watch(self)

    def failHandshake(self, reason, code=400, responseHeaders=None):
        self.factory.handshake_failures.inc()
        if code == 400 and reason.startswith(
            ("WebSocket connection denied: origin", "HTTP Origin header invalid")
        ):
            # Autobahn's origin check answers 400; RFC 6455 (4.2.2) says 403 Forbidden.
            code = 403
        super().failHandshake(reason, code, responseHeaders)

    def onClose(self, wasClean, code, reason):
        if self._admitted_ip is not None:
            self.factory.context.admission.release(self._admitted_ip)
            self._admitted_ip = None
        self.factory.hellos.meet(self)
        if self.factory.keepalive is not None:
            self.factory.keepalive.forget(self)
        self._cancel_judgement()
        self._replies = ()
        if self not in self.factory.live:
            return  # the opening handshake never completed; Autobahn logged why
        context = self.factory.context
        context.server.metrics.closes.labels(str(code)).inc()
        session, self.session = self.session, None
        try:
            if session is not None:
                context.server.disconnect(session)
        except Exception:
            # Whatever went wrong, the connection must stop counting (and not hold up a
            # graceful shutdown): log it and carry on.
            self._log.failure("error while {user} was disconnecting", user=session.user)
        self.factory.closed(self)
        if not context.log_connections:
            return
        self._log.info(
            "{peer} ({user}) disconnected from {listener}: close code {code} {reason}",
            peer=self.peer_address,
            user=session.user if session else "no session",
            listener=context.name,
            code=code,
            reason=reason or "",
        )

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.factory.opening.meet(self.transport)  # if it closed before it opened
        # Autobahn's is_closed Deferred holds this protocol as its result: a cycle that only a
        # full collection would free, with the transport and what it still held.
        self.is_open = self.is_closed = None
        self._backlog = None

    def _hello_overdue(self):
        self._log.info("{peer} said no valid hello in time; closing", peer=self.peer_address)
        self.close_with(CLOSE_POLICY_VIOLATION, "no valid hello in time")

    # -- keepalive (keepalive.Keepalive calls these) ------------------------------------------

    def send_ping(self) -> None:
        self._write(PING_FRAME)

    def drop_silent(self) -> None:
        self._log.info(
            "{peer} ({user}) answered no ping within {timeout:g}s; dropping the connection",
            peer=self.peer_address,
            user=self.session.user if self.session else "no hello",
            timeout=self.factory.context.limits.ping_timeout,
        )
        self.dropConnection(abort=True)

    # -- frames -------------------------------------------------------------------------------

    def onFrameEnd(self):
        ended = super().onFrameEnd()
        # Autobahn keeps each frame's unmasker until the connection's next frame: seconds
        # on a chat connection, long enough for the collector to move it (and its C buffer)
        # into the old generation, one pair per message received. Those made the full
        # collections in many small rooms (bench c10); let go of it at once instead.
        self.current_frame_masker = None
        return ended

    def onMessage(self, payload, isBinary):
        context = self.factory.context
        if self._awaiting is not None and not isBinary:
            if len(self._held) >= MAX_HELD_FRAMES:
                self._over_budget(None)
                return
            self._held.append(payload)
            return
        if isBinary:
            self._log.info("{peer} sent a binary frame; closing with 1003", peer=self.peer_address)
            self.close_with(
                CLOSE_UNSUPPORTED_DATA, "binary frames are not accepted; send JSON text"
            )
            return
        budget = self._budget
        if not budget.admit(context.clock.seconds()):
            self._over_budget(None)
            return
        ref = None
        try:
            frame = context.parser.parse(payload)
            ref = frame.ref
            if not budget.take(frame.type, context.clock.seconds()):
                self._over_budget(frame)
                return
            budget.forgive()
            self._dispatch(frame)
        except ChatError as error:
            self._refuse(error.code, error.message, error.ref or ref)
        except Exception:
            self._log.failure("internal error serving {peer}", peer=self.peer_address)
            self.close_with(CLOSE_INTERNAL_ERROR, "internal server error")

    def _refuse(self, code: str, message: str, ref: str | None) -> None:
        self.factory.context.server.metrics.errors.labels(code).inc()
        self.reply(wire.error(code, message, ref))

    def _over_budget(self, frame) -> None:
        """A frame over its budget is dropped with `rate_limited` (a typing indicator without
        a word: an error per keystroke would be a flood of our own). Only frames that cost the
        server (says, joins, anything unreadable) count toward closing a flood: a client is
        never closed for typing indicators or lookups it sends too fast."""
        if frame is not None and frame.type in TYPING_FRAMES:
            return
        budget = self._budget
        limits = self.factory.context.limits
        if budget.strike(frame.type if frame is not None else None):
            self._log.warn(
                "{peer} ({user}) kept flooding past {rate}/s; closing with 1008",
                peer=self.peer_address,
                user=self.session.user if self.session else "no hello",
                rate=limits.messages_per_second,
            )
            self.close_with(CLOSE_POLICY_VIOLATION, "rate limit exceeded")
            return
        rate = budget.rate_of(frame.type if frame is not None else None)
        self._refuse(
            errors.RATE_LIMITED,
            f"slow down: at most {rate:g} such frames per second",
            frame.ref if frame is not None else None,
        )

    def _dispatch(self, frame: wire.ClientFrame) -> None:
        if isinstance(frame, wire.Hello):
            self.handle_hello(frame)
        elif self.session is None:
            raise ChatError(errors.HELLO_REQUIRED, "say hello first", frame.ref)
        elif isinstance(frame, wire.Refresh):
            self.handle_refresh(frame)
        else:
            reply = self.factory.context.server.handle(self.session, frame)
            if isinstance(reply, Deferred):
                self._await(reply, frame.ref)
            elif reply is not None:
                self.reply(reply)

    def _await(self, answer: Deferred, ref: str | None) -> None:
        self._awaiting = answer
        if self._held is None:
            self._held = deque()
        answer.addCallbacks(self._answered, self._not_answered, errbackArgs=(ref,))
        answer.addBoth(self._serve_held)

    def _answered(self, reply: bytes | None) -> None:
        if reply is not None and self.session is not None and self.session.connection is self:
            self.reply(reply)

    def _not_answered(self, failure, ref: str | None) -> None:
        if self.session is None or self.session.connection is not self:
            return
        if failure.check(ChatError):
            error = failure.value
            self._refuse(error.code, error.message, error.ref or ref)
            return
        self._log.warn(
            "could not serve {peer}'s request: {error}",
            peer=self.peer_address,
            error=str(failure.value),
        )
        self._refuse(errors.UNAVAILABLE, "the server cannot serve this now; retry", ref)

    def _serve_held(self, _ignored) -> None:
        self._awaiting = None
        while self._held and self._awaiting is None:
            self.onMessage(self._held.popleft(), False)

    # -- the connection's own frames ----------------------------------------------------------

    def handle_hello(self, frame: wire.Hello) -> None:
        if self.session is not None:
            raise ChatError(
                errors.ALREADY_WELCOMED, f"already welcomed as {self.session.user}", frame.ref
            )
        context = self.factory.context
        try:
            identity = context.authenticator.identify(frame)
            welcome = context.server.hello(self, identity, frame)
        except ChatError as refusal:
            self._refused_at_hello(refusal, frame.ref)
            return
        if isinstance(welcome, Deferred):  # Redis mode: the user's sessions counted first
            self._awaiting = welcome
            if self._held is None:
                self._held = deque()
            welcome.addCallbacks(self._welcomed_later, self._not_welcomed, errbackArgs=(frame,))
            welcome.addBoth(self._serve_held)
            return
        self._welcome(*welcome)

    def _refused_at_hello(self, refusal: ChatError, ref: str | None) -> None:
        if refusal.code in FATAL_AT_HELLO:
            self._log.info(
                "{peer} was refused at hello: {why}",
                peer=self.peer_address,
                why=refusal.message,
            )
            self._refuse(refusal.code, refusal.message, ref)
            self.close_with(CLOSE_POLICY_VIOLATION, "authentication failed")
            return
        self._refuse(refusal.code, refusal.message, refusal.ref or ref)

    def _welcomed_later(self, opened: tuple[Session, dict]) -> None:
        session, fields = opened
        if self.state != WebSocketProtocol.STATE_OPEN:
            # Closed while its hello waited: the session it was given ends at once.
            self.factory.context.server.disconnect(session)
            return
        self._welcome(session, fields)

    def _not_welcomed(self, failure, frame: wire.Hello) -> None:
        if self.state != WebSocketProtocol.STATE_OPEN:
            return
        if failure.check(ChatError):
            self._refused_at_hello(failure.value, frame.ref)
            return
        self._log.failure("could not welcome {peer}", failure, peer=self.peer_address)
        self._refuse(errors.UNAVAILABLE, "the server cannot welcome you now; retry", frame.ref)

    def _welcome(self, session: Session, fields: dict) -> None:
        context = self.factory.context
        self.session = session
        self.factory.hellos.meet(self)
        if context.log_connections:
            self._log.info(
                "{peer} is {user} on {listener} (session {session}{resumed})",
                peer=self.peer_address,
                user=session.user,
                listener=context.name,
                session=session.id,
                resumed=", resumed" if fields["resumed"] else "",
            )
        fields["max_text_chars"] = context.parser.max_text_chars
        self.reply(wire.welcome(fields))

    def handle_refresh(self, frame: wire.Refresh) -> None:
        context = self.factory.context
        verify = getattr(context.authenticator, "verify", None)
        if verify is None:
            raise ChatError(errors.BAD_FRAME, "this server does not use tokens", frame.ref)
        self.reply(context.server.refresh(self.session, verify(frame.token), frame.ref))

    def replaced(self) -> None:
        """Another connection resumed this one's session: it is no longer ours to end."""
        self.session = None
        self.close_with(errors.CLOSE_REPLACED, "replaced by a new connection")

    # -- sending ------------------------------------------------------------------------------

    def close_with(self, code: int, reason: str) -> None:
        """Start the closing handshake with a protocol-level code (1003, 1008, 1011, ...).

        Autobahn's sendClose only takes 1000 and 3000-4999, the codes an application may
        choose; the RFC 6455 codes for protocol failures go through sendCloseFrame.
        """
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:123], isReply=False)

    def send(self, payload: bytes) -> None:
        """One frame that is not a reply to this peer's request (a late ack, a desk update)."""
        self._write(self._frames([payload]))

    def reply(self, payload: bytes) -> None:
        """The answer to this peer's own request. Not through sendMessage: Autobahn applies the
        *incoming* max_message_bytes to outgoing messages too, and a `joined` or `history` reply
        with a full page of long messages is larger than any single client frame may be.

        What the kernel does not take of it at once, and what is queued behind it, does not
        count toward the budget until the peer has read it (`_judge`): a reader is not dropped
        for a large page it asked for.
        """
        if self.state != WebSocketProtocol.STATE_OPEN:
            return
        frames = self._frames([payload])
        if self._paused:
            self._judge()
        self.transport.write(frames)
        backlog = self._backlog
        if backlog is not None:
            queued = backlog.queued()
            if queued:  # the reply is the tail of the queue, a stream `drained` bytes in
                drained = backlog.drained
                end = drained + queued
                self._replies = (
                    *(reply for reply in self._replies if reply[1] > drained),
                    (end - min(len(frames), queued), end),
                )
            if self._paused:
                self._judge()

    def _write(self, frames: bytes, replies: list[bytes] = ()) -> None:
        """Frames made for this connection (`_frames`), then its own `replies` (acks), in one
        write.

        Straight to the transport: sendPreparedMessage's path through sendData costs a
        formatted debug log call per delivery (fan-out ~5x slower, measured). Unless the
        transport holds more than the budget, that write and one flag test are all it costs.
        """
        if self.state == WebSocketProtocol.STATE_OPEN:
            if replies:
                frames += self._frames(replies)
            if self._paused:
                self._judge()  # the peer may have read below the budget since the last write
            self.transport.write(frames)  # sent at once when it can: sendnow.SendNowServer
            if self._paused:
                self._judge()

    # A room's frames (`outgoing.prepare_frames`, made once for all members) go out as they are:
    # no call more per delivery on the fan-out path.
    send_prepared = _write

    def _frames(self, payloads: list[bytes]) -> bytes:
        """This connection's own frames (replies, acks, desk updates)."""
        return prepare_frames(payloads)

    # -- the unsent-bytes budget --------------------------------------------------------------

    def _judge(self) -> None:
        """Drop a peer that stays behind. Called while the transport holds more than the budget
        (`[limits] max_buffered_bytes`): around each write, and by a timer.

        What counts is what this process still holds for the peer (`sendnow.Backlog`); while
        a reply to its own request (`history`, `joined`, ...) is still queued, only what is
        queued ahead of that reply: a large reply, and what the room sends while the peer reads
        it, need not fit the budget; what is left once it has read the reply must, within the
        grace.

        A peer is closed with 1008 when what counts stays over the budget for
        `slow_consumer_grace` (the grace is for our own bursts: a busy turn can queue more than
        the budget before the reactor sends any of it), or when it reads nothing at all for
        that long while the transport holds more than the budget, or at once when it holds
        more than `HARD_BACKLOG` times the budget besides the reply being read (so memory stays
        bounded by that and one reply). A peer whose backlog drains
        below the budget within the grace is kept: the clock starts again the next time it
        goes over.
        """
        backlog = self._backlog
        if backlog is None or self.state != WebSocketProtocol.STATE_OPEN:
            return
        limits = self.factory.context.limits
        budget, grace = limits.max_buffered_bytes, limits.slow_consumer_grace
        now = self.factory.context.clock.seconds()
        queued = backlog.queued()
        drained = backlog.drained
        if drained != self._progress[0]:
            self._progress = (drained, backlog.drained_at)
        counted = held = queued
        if self._replies:
            # The queue is a stream, read up to `drained`: what counts is what is ahead of the
            # oldest reply the peer has not read yet; toward the hard cap, all but that reply.
            self._replies = tuple(reply for reply in self._replies if reply[1] > drained)
            if self._replies:
                start, end = self._replies[0]
                counted = max(start - drained, 0)
                held = queued - (end - max(start, drained))
        if counted > budget:
            if self._over_since is None:
                self._over_since = now
        else:
            self._over_since = None
        deadline = self._progress[1] + grace
        if self._over_since is not None:
            deadline = min(deadline, self._over_since + grace)
        if held > HARD_BACKLOG * budget or deadline <= now:
            self._drop_slow_consumer(queued)
        else:
            self._schedule_judgement(deadline - now)

    def _schedule_judgement(self, delay: float) -> None:
        call = self._grace_call
        if call is None or not call.active():
            self._grace_call = self.factory.context.clock.callLater(delay, self._judged_late)
        else:
            call.reset(delay)

    def _cancel_judgement(self) -> None:
        call, self._grace_call = self._grace_call, None
        if call is not None and call.active():
            call.cancel()

    def _judged_late(self) -> None:
        self._grace_call = None
        if self._paused:
            self._judge()

    def _drop_slow_consumer(self, queued: int) -> None:
        self._cancel_judgement()
        self._replies = ()
        limits = self.factory.context.limits
        self.factory.context.server.metrics.slow_consumer_drops.inc()
        self._log.warn(
            "{peer} ({user}) is not reading: {queued} unsent bytes, over {budget} for"
            " {grace:g}s or far over; closing with 1008",
            peer=self.peer_address,
            user=self.session.user if self.session else "no hello",
            queued=queued,
            budget=limits.max_buffered_bytes,
            grace=limits.slow_consumer_grace,
        )
        # The close frame queues behind what it has not read; Autobahn's closing handshake
        # timeout then drops the TCP connection, and the transport lets go of its buffer.
        self.close_with(CLOSE_POLICY_VIOLATION, "slow consumer")


class DeflatingServerProtocol(ChatServerProtocol):
    """A connection of a listener with `[limits] compression` on: compressed frames for a
    client that negotiated permessage-deflate, plain ones for the others (chatd/outgoing.py)."""

    window_bits: int | None = None  # what to compress with; None: not negotiated

    def onOpen(self):
        self.window_bits = negotiated_window(self.websocket_extensions_in_use)
        super().onOpen()

    def send_prepared(self, frames: Outgoing, replies: list[bytes] = ()) -> None:
        self._write(frames.framed(self.window_bits), replies)

    def _frames(self, payloads: list[bytes]) -> bytes:
        return self.factory.context.deflater.frames(payloads, self.window_bits)


def _drop(transport) -> None:
    transport.abortConnection()  # as Autobahn drops an overdue opening handshake


class ChatServerFactory(WebSocketServerFactory):
    """One per listener (Autobahn's origin check reads the factory's URL).

    It keeps its open connections, to count them and to say goodbye to them at shutdown, and
    one keepalive timer for all of them.
    """

    protocol = ChatServerProtocol
    _connection_class = ChatServerProtocol  # what `protocol` subclasses (setProtocolOptions)
    origins = OriginPolicy(["*"])  # until allow_origins: Autobahn's default

    def __init__(self, url: str, context: ListenerContext):
        super().__init__(url, reactor=context.clock)
        self.context = context
        limits = context.limits
        self.live: set[ChatServerProtocol] = set()
        self.traffic = TrafficStats()  # every connection's, summed (ChatServerProtocol)
        # Connections by transport from their accept until open: the front door sets each
        # (front_door.FrontDoor), onOpen meets it; Autobahn's timer per connection is off.
        self.opening = Deadlines(context.clock, limits.handshake_timeout, _drop)
        # Open connections that have not said a valid hello yet.
        self.hellos = Deadlines(context.clock, context.hello_timeout, self._no_hello)
        self.keepalive = (
            Keepalive(context.clock, limits.ping_interval, limits.ping_timeout)
            if limits.ping_interval > 0
            else None
        )
        self._drained: Deferred | None = None
        metrics = context.server.metrics
        metrics.connections.labels(context.name).set_function(lambda: len(self.live))
        self.handshakes = metrics.handshakes.labels(context.name)
        self.handshake_failures = metrics.handshake_failures.labels(context.name)
        if context.deflater is not None:
            self._connection_class = DeflatingServerProtocol
            accept = deflate_acceptor(limits.max_message_bytes)
            compression = {"perMessageCompressionAccept": accept}
        else:
            compression = {}
        self.setProtocolOptions(
            **compression,
            maxFramePayloadSize=limits.max_message_bytes,
            maxMessagePayloadSize=limits.max_message_bytes,
            autoFragmentSize=0,
            tcpNoDelay=True,
            openHandshakeTimeout=0,  # `opening` keeps the deadline, counted from accept
            autoPingInterval=0,  # keepalive.Keepalive pings instead, on one timer
            # Browsers send Origin; "null" (sandboxed frames, file://) is never ours.
            allowNullOrigin=False,
            # Answer protocol violations (1007, 1009, ...) with a close frame the client can
            # read, rather than a bare TCP reset.
            failByDrop=False,
        )

    def setProtocolOptions(self, **options) -> None:
        """Set Autobahn's options, and give this listener a protocol class that holds them.

        Autobahn copies every option (about 30) from the factory onto each new connection,
        unless the protocol already has it, and logs the lot through an eager `pformat`:
        a third of the CPU of a handshake and 2 KiB of memory per connection (bench (d), (e)).
        Holding them as class attributes of a per-listener subclass skips both; each
        connection still reads the options it was opened with. The class also holds the values
        that open connections share (chatd/lean.py).
        """
        super().setProtocolOptions(**options)
        options = {name: getattr(self, name) for name in WebSocketServerProtocol.CONFIG_ATTRS}
        self.protocol = type(
            f"{self._connection_class.__name__}_{self.context.name}",
            (self._connection_class,),
            {
                # A function option (perMessageCompressionAccept) must not become a method.
                name: staticmethod(value) if inspect.isfunction(value) else value
                for name, value in options.items()
            }
            | lean.CLASS_VALUES
            | {"CONFIG_ATTRS": ()},
        )

    def allow_origins(self, origins: list[str]) -> None:
        """Browser origins that may connect (clients without Origin pass). Checked in onConnect
        (chatd/origins.py: Autobahn's own check mishandles IPv6 hosts); Autobahn's is left open."""
        self.origins = OriginPolicy(origins)

    def go_away(self, clock, timeout: float) -> Deferred:
        """Close every connection with 1001 (going away), so clients reconnect and resume.

        Fires once each connection's onClose has run (so its leave events are posted), or
        after `timeout` seconds, when the rest are dropped. Each peer has that long to answer
        the close, not Autobahn's closing-handshake timeout (1 s): one on a slow network would
        otherwise be reset before it has read the 1001, and see its connection fail instead.
        """
        if not self.live:
            return succeed(None)
        self._drained = Deferred()
        for protocol in list(self.live):
            protocol.closeHandshakeTimeout = timeout
            protocol.close_with(CLOSE_GOING_AWAY, "server shutting down")

        def drop_stragglers(result):
            for protocol in list(self.live):
                protocol.dropConnection(abort=True)
            return result

        self._drained.addTimeout(timeout, clock, onTimeoutCancel=lambda result, _timeout: None)
        return self._drained.addCallback(drop_stragglers)

    @staticmethod
    def _no_hello(protocol: ChatServerProtocol) -> None:
        protocol._hello_overdue()

    def closed(self, protocol: ChatServerProtocol) -> None:
        self.live.discard(protocol)
        if not self.live and self._drained is not None and not self._drained.called:
            self._drained.callback(None)
