"""A thin Redis client for Twisted: hiredis parses the replies, this module keeps the order.

Why not a client library: redis-py blocks the reactor, `redis.asyncio` needs the asyncio
reactor (15.5 µs an event here against 2.5 µs for a bare protocol over hiredis),
txredisapi is unmaintained; this client, with its Deferreds and deadlines, costs ~14 µs an
event (BENCHMARKS.md, "Redis client"). What a chat server needs is small: commands
written at once (pipelining), replies matched to requests in order, a deadline on every
command, scripts by SHA-1 with a reload on NOSCRIPT, reconnection with backoff, and pub/sub.

A command that cannot be answered (no connection, the connection lost, a deadline passed)
fails with `RedisUnavailable`; Redis's own error replies fail with `RedisError`. A deadline
that passes drops the connection: later replies could no longer be matched to their requests.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import hiredis
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.config import RedisConfig


class RedisUnavailable(Exception):
    """Redis did not answer: not connected, the connection was lost, or a deadline passed."""


class RedisError(Exception):
    """Redis answered with an error (`NOSCRIPT ...`, `OOM ...`, a script's own error)."""


def hash_of(reply: list[bytes]) -> dict[str, str]:
    """An HGETALL reply (field, value, field, value, ...) as a dict of text."""
    return {reply[i].decode(): reply[i + 1].decode() for i in range(0, len(reply), 2)}


class RedisProtocol(Protocol):
    """One connection. Replies answer requests first in, first out; on a subscriber
    connection (`on_push` set), messages are handed to `on_push` as they come."""

    _log = Logger()

    def __init__(
        self,
        clock,
        command_timeout: float,
        on_push: Callable | None = None,
        on_chunk_end: Callable[[], None] | None = None,
    ):
        self._clock = clock
        self._timeout = command_timeout
        self._reader = hiredis.Reader()
        self._waiting: deque[tuple[Deferred, float]] = deque()
        self._watchdog = None
        self.on_push = on_push
        self.on_chunk_end = on_chunk_end  # after the messages of one read are handed over
        self.lost: Deferred = Deferred()

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def execute(self, *args) -> Deferred:
        return self.pipeline([args])[0]

    def pipeline(self, commands: Sequence[Sequence]) -> list[Deferred]:
        """Write every command at once; a Deferred for each reply, in order."""
        if self.transport is None or not self.connected:
            return [defer.fail(RedisUnavailable("not connected to Redis")) for _ in commands]
        deadline = self._clock.seconds() + self._timeout
        results = []
        for _command in commands:
            waiting = Deferred()
            self._waiting.append((waiting, deadline))
            results.append(waiting)
        self.transport.write(b"".join(map(hiredis.pack_command, commands)))
        if self._watchdog is None:
            self._watchdog = self._clock.callLater(self._timeout, self._check_deadline)
        return results

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        overdue = self._waiting[0][1] - self._clock.seconds()
        if overdue <= 0:
            self._log.warn(
                "Redis did not answer within {timeout}s; dropping the connection",
                timeout=self._timeout,
            )
            self.transport.abortConnection()
            return
        self._watchdog = self._clock.callLater(overdue, self._check_deadline)

    def dataReceived(self, data):
        reader = self._reader
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                self._reply(reply)
        except hiredis.ProtocolError as error:
            self._log.error("Redis sent what is not RESP ({error}); reconnecting", error=error)
            self.transport.abortConnection()
            return
        if self.on_chunk_end is not None:
            self.on_chunk_end()

    def _reply(self, reply: Any) -> None:
        if self.on_push is not None and isinstance(reply, list) and reply:
            kind = reply[0]
            if kind in (b"message", b"pmessage"):
                self.on_push(reply)
                return
        if not self._waiting:
            self._log.warn("an unexpected reply from Redis: {reply!r}", reply=reply)
            return
        waiting, _deadline = self._waiting.popleft()
        if isinstance(reply, hiredis.ReplyError):
            waiting.errback(RedisError(str(reply)))
        else:
            waiting.callback(reply)

    def connectionLost(self, reason=None):
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None
        waiting, self._waiting = self._waiting, deque()
        for deferred, _deadline in waiting:
            deferred.errback(RedisUnavailable("the connection to Redis was lost"))
        self.lost.callback(None)


class Script:
    """A Lua script of this package, called by SHA-1 (loaded on each connection)."""

    def __init__(self, name: str):
        self.name = name
        self.source = resources.files("chatd.redis").joinpath(f"{name}.lua").read_bytes()
        self.sha = hashlib.sha1(self.source).hexdigest()

    def command(self, keys: Sequence, args: Sequence) -> tuple:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


class RedisLink:
    """A connection to Redis that comes back by itself: `ClientService` reconnects with
    backoff; `prepare` (AUTH, SELECT, SCRIPT LOAD) runs before a connection is used.

    `on_up` / `on_down` callbacks hear of each connection made ready and each one lost;
    `connection` waits for one (a node just started, or reconnecting).
    """

    _log = Logger()

    def __init__(
        self,
        reactor,
        config: RedisConfig,
        scripts: Sequence[Script] = (),
        on_push: Callable | None = None,
        on_chunk_end: Callable[[], None] | None = None,
        name: str = "commands",
    ):
        self._scripts = scripts
        self._name = name
        self._clock = reactor
        self._connect_timeout = config.connect_timeout
        self._waiting: list[Deferred] = []  # for `connection`
        self.protocol: RedisProtocol | None = None
        self.on_up: list[Callable[[RedisProtocol], None]] = []
        self.on_down: list[Callable[[], None]] = []
        self._said_down = False
        self._stopping = False
        self._address = address = config.address
        endpoint_type = TCP6ClientEndpoint if ":" in address.host else TCP4ClientEndpoint
        endpoint = endpoint_type(
            reactor, address.host, address.port, timeout=config.connect_timeout
        )
        factory = Factory.forProtocol(
            lambda: RedisProtocol(reactor, config.command_timeout, on_push, on_chunk_end)
        )
        self._service = ClientService(
            endpoint,
            factory,
            retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=2.0, factor=2.0),
            clock=reactor,
            prepareConnection=self._prepare,
        )

    @property
    def connected(self) -> bool:
        return self.protocol is not None

    def start(self) -> None:
        self._service.startService()

    def stop(self) -> Deferred:
        self._stopping = True
        return self._service.stopService()

    def _prepare(self, protocol: RedisProtocol) -> Deferred:
        commands: list[tuple] = []
        if self._address.password:
            commands.append(("AUTH", self._address.password))
        if self._address.db:
            commands.append(("SELECT", self._address.db))
        for script in self._scripts:
            commands.append(("SCRIPT", "LOAD", script.source))
        ready = defer.gatherResults(protocol.pipeline(commands), consumeErrors=True)

        def up(_ignored):
            self.protocol = protocol
            protocol.lost.addCallback(self._lost, protocol)
            if self._said_down:
                self._log.info("connected to Redis again ({name})", name=self._name)
                self._said_down = False
            for hook in list(self.on_up):  # a hook may remove itself
                hook(protocol)
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:
                waiter.callback(None)

        def refused(failure: Failure):
            error = failure.value
            if isinstance(error, defer.FirstError):
                error = error.subFailure.value
            self._log.error(
                "Redis refused chatd's connection setup ({name}): {error}",
                name=self._name,
                error=str(error),
            )
            protocol.transport.loseConnection()
            return failure

        return ready.addCallbacks(up, refused)

    def _lost(self, _ignored, protocol: RedisProtocol) -> None:
        if self.protocol is not protocol:
            return
        self.protocol = None
        if not self._said_down and not self._stopping:
            self._log.warn(
                "lost the connection to Redis at {host}:{port} ({name}); reconnecting",
                host=self._address.host,
                port=self._address.port,
                name=self._name,
            )
            self._said_down = True
        for hook in self.on_down:
            hook()

    def connection(self) -> Deferred:
        """Fires once connected and ready (at once if it is, after the `on_up` hooks if not);
        fails with RedisUnavailable if that takes longer than `connect_timeout`."""
        if self.protocol is not None:
            return defer.succeed(None)
        waiter: Deferred = Deferred(lambda cancelled: self._waiting.remove(cancelled))

        def timed_out(failure: Failure):
            failure.trap(defer.TimeoutError)
            raise RedisUnavailable(f"not connected to Redis within {self._connect_timeout}s")

        self._waiting.append(waiter)
        waiter.addTimeout(self._connect_timeout, self._clock)
        return waiter.addErrback(timed_out)

    def execute(self, *args) -> Deferred:
        if self.protocol is None:
            return defer.fail(RedisUnavailable("not connected to Redis"))
        return self.protocol.execute(*args)

    def pipeline(self, commands: Sequence[Sequence]) -> list[Deferred]:
        if self.protocol is None:
            return [defer.fail(RedisUnavailable("not connected to Redis")) for _ in commands]
        return self.protocol.pipeline(commands)

    def run(self, script: Script, keys: Sequence, args: Sequence) -> Deferred:
        """Call a script: its reply, or its failure."""

        def one(outcomes):
            ok, value = outcomes[0]
            return value if ok else Failure(value)

        return self.run_many(script, [(keys, args)]).addCallback(one)

    def run_many(self, script: Script, calls: Sequence[tuple[Sequence, Sequence]]) -> Deferred:
        """Call a script once per (keys, args), pipelined: a list of (True, reply) or
        (False, exception), in order. Calls refused with NOSCRIPT (after a `SCRIPT FLUSH`)
        did nothing: the script is loaded and they are called again."""
        outcomes: list = [None] * len(calls)

        def attempt(indices: list[int]) -> Deferred:
            replies = self.pipeline([script.command(*calls[i]) for i in indices])
            return defer.DeferredList(replies, consumeErrors=True).addCallback(settle, indices)

        def settle(results, indices: list[int]):
            forgotten = []
            for index, (ok, value) in zip(indices, results, strict=True):
                if not ok and value.check(RedisError) and str(value.value).startswith("NOSCRIPT"):
                    forgotten.append(index)
                else:
                    outcomes[index] = (ok, value if ok else value.value)
            if not forgotten or len(indices) != len(calls):  # reload once per batch
                for index in forgotten:
                    outcomes[index] = (False, RedisError(f"NOSCRIPT {script.name}"))
                return outcomes
            self._log.info("Redis had forgotten script {name}; loading it", name=script.name)

            def not_loaded(failure: Failure):
                for index in forgotten:
                    outcomes[index] = (False, failure.value)
                return outcomes

            loaded = self.execute("SCRIPT", "LOAD", script.source)
            return loaded.addCallbacks(lambda _sha: attempt(forgotten), not_loaded)

        return attempt(list(range(len(calls))))
