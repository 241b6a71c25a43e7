"""A stand-in for chatd/redis/client.py's RedisLink in unit tests: each command and script call
is recorded with the Deferred of its reply, which the test fires (or fails) when it says.
The code under test is what talks to it; Redis's own behaviour is tested against a real
redis-server (tests/e2e)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.defer import Deferred


class Link:
    def __init__(self):
        self.calls: list[tuple[tuple, Deferred]] = []
        self.on_up: list = []
        self.connected = True

    def connection(self) -> Deferred:
        return defer.succeed(None)

    def execute(self, *args) -> Deferred:
        reply: Deferred = Deferred()
        self.calls.append((args, reply))
        return reply

    def run(self, script, keys, args) -> Deferred:
        """A script call, recorded as (script name, *keys, *args)."""
        return self.execute(script.name, *keys, *args)

    def pipeline(self, commands) -> list[Deferred]:
        return [self.execute(*command) for command in commands]

    def take(self, command: str | None = None) -> tuple[tuple, Deferred]:
        """The first call made (removed); with `command`, the one call of it, which must be
        the only one since the last take."""
        if command is None:
            return self.calls.pop(0)
        found = [call for call in self.calls if call[0][0] == command]
        assert len(found) == 1, self.calls
        self.calls.remove(found[0])
        return found[0]
