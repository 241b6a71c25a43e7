"""Node-wide notices: what every node must hear that is no room's event.

One pub/sub channel (`Keys.notices`) carries small JSON objects `{"kind": .., "node": ..,
...}`: an agent's availability changed, a user was renamed, a user is to be disconnected. Each
kind has one handler per node, registered with `on`; a node hears its own notices too and
handlers skip them when they already acted locally.

Pub/sub is at most once, so a notice is never the only copy of shared state: whoever
publishes one stores the state it announces in Redis first, and a node whose subscription
was made again reads that state back (the `on_resubscribed` hooks).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd.redis.client import RedisLink
from chatd.redis.keys import Keys


class Notices:
    _log = Logger()

    def __init__(self, commands: RedisLink, keys: Keys, node: str):
        self._commands = commands
        self.channel = keys.notices.encode()
        self.node = node
        self._handlers: dict[str, Callable[[str, dict], None]] = {}

    def on(self, kind: str, handle: Callable[[str, dict], None]) -> None:
        """`handle(node, notice)` for each notice of this kind, from any node."""
        self._handlers[kind] = handle

    def publish(self, kind: str, **fields) -> Deferred:
        payload = json.dumps({"kind": kind, "node": self.node, **fields}, separators=(",", ":"))
        published = self._commands.execute("PUBLISH", self.channel, payload)
        return published.addErrback(self._not_published, kind)

    def _not_published(self, failure, kind: str) -> None:
        self._log.warn(
            "could not tell the other nodes of a {kind} notice: {error}",
            kind=kind,
            error=failure.getErrorMessage(),
        )

    def hear(self, payload: bytes) -> None:
        try:
            notice = json.loads(payload)
            kind, node = notice["kind"], notice["node"]
        except (ValueError, TypeError, KeyError):
            self._log.error("an unreadable notice on {channel}", channel=self.channel.decode())
            return
        handle = self._handlers.get(kind)
        if handle is not None:
            handle(node, notice)
