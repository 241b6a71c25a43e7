"""The nodes of a cluster: each holds a lease; the members of a dead one are let go.

Presence is counted in Redis per node (`held`: which members a node holds sessions of;
`sessions`: how many sessions of each user it has), so that a node that dies does not leave
its users in the rooms, or counted against `[auth] max_sessions_per_user`, for ever: every
node renews its own lease (`alive`, expiring after `[redis] node_lease`) and looks for nodes
whose lease has run out; for each member such a node held, it posts the presence change a
leaving session would have (post.lua takes it back from the dead node's count, and writes
the `leave` event when no node holds the user any more), then deletes the node's keys. Two
nodes doing it at once is harmless: post.lua takes each held member back once.

The same runs for the node itself when it (re)connects to Redis: what Redis says it holds
and its rooms do not (a run before a restart under the same name, a leave whose post failed
while Redis was away) is let go.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatd.redis.client import RedisLink, hash_of
from chatd.redis.keys import Keys
from chatd.redis.sequencer import POST, RedisSequencer
from chatd.rooms import presence_draft


class Nodes:
    _log = Logger()

    def __init__(
        self,
        clock,
        link: RedisLink,
        keys: Keys,
        node: str,
        lease: float,
        sequencer: RedisSequencer,
        held_here: Callable[[], set[str]],
    ):
        self._clock = clock
        self._link = link
        self._keys = keys
        self.node = node
        self._lease = lease
        self._sequencer = sequencer
        self._held_here = held_here  # "ROOM USER" for each member this node holds now
        self.on_dead: list[Callable[[str], None]] = []  # called with each dead node reaped
        self._loop = LoopingCall(self._beat)
        self._loop.clock = clock
        self._busy = False
        link.on_up.append(self._connected)

    def start(self) -> None:
        self._loop.start(self._lease / 3, now=False)

    def stop(self) -> Deferred:
        if self._loop.running:
            self._loop.stop()
        if not self._link.connected:
            return defer.succeed(None)
        return self._link.execute("DEL", self._keys.alive(self.node)).addErrback(
            lambda _failure: None
        )

    def _beat(self) -> None:
        if not self._link.connected or self._busy:
            return
        self._busy = True
        keys = self._keys
        renewed = self._link.pipeline(
            [
                ("SET", keys.alive(self.node), "1", "PX", int(self._lease * 1000)),
                ("SADD", keys.nodes, self.node),
                ("SMEMBERS", keys.nodes),
            ]
        )
        done = renewed[2].addCallback(self._check_others)
        done.addErrback(self._failed, "renewing its lease")
        done.addBoth(self._idle)

    def _idle(self, _ignored) -> None:
        self._busy = False

    def _failed(self, failure, doing: str) -> None:
        self._log.warn(
            "node {node}: {doing} in Redis failed: {error}",
            node=self.node,
            doing=doing,
            error=str(failure.value),
        )

    def _check_others(self, members: list[bytes]) -> Deferred:
        others = [name.decode() for name in members if name.decode() != self.node]
        if not others:
            return defer.succeed(None)
        checks = self._link.pipeline([("EXISTS", self._keys.alive(node)) for node in others])
        return defer.gatherResults(checks).addCallback(self._reap_dead, others)

    def _reap_dead(self, alive: list[int], others: list[str]) -> Deferred:
        dead = [node for node, exists in zip(others, alive, strict=True) if not exists]
        return defer.gatherResults([self._let_go(node, keep=set()) for node in dead])

    def _connected(self, _protocol) -> None:
        """Register in `nodes` and take the lease at once, before this node posts presence,
        stores agents or counts sessions: a node that died before its first beat would be
        reaped by nobody, and the other nodes count its sessions (session_counts.py) only
        while its lease lasts."""
        self._beat()
        self._reconcile()

    def _reconcile(self) -> None:
        """Let go of what Redis says this node holds and it does not."""
        self._let_go(self.node, keep=self._held_here()).addErrback(
            self._failed, "letting go of members it no longer holds"
        )

    def _let_go(self, node: str, keep: set[str]) -> Deferred:
        held = self._link.execute("HGETALL", self._keys.held(node))
        return held.addCallback(self._post_leaves, node, keep)

    def _post_leaves(self, flat: list[bytes], node: str, keep: set[str]) -> Deferred:
        entries = hash_of(flat)
        gone = {entry: name for entry, name in entries.items() if entry not in keep}
        if node != self.node and not entries:
            return self._forget(node)
        if not gone:
            return defer.succeed(None)
        now = self._clock.seconds()
        calls = []
        for entry, name in gone.items():
            room, user = entry.split(" ", 1)
            draft = presence_draft(user, name, "leave", now)
            calls.append(self._sequencer.call(room, draft, held_by=node))
        self._log.info(
            "node {node}: letting go of {count} member(s) it held{why}",
            node=node,
            count=len(calls),
            why=" (its lease ran out)" if node != self.node else " (left from before)",
        )
        done = self._link.run_many(POST, calls)
        if node != self.node:
            done.addCallback(lambda _outcomes: self._forget(node))
        return done

    def _forget(self, node: str) -> Deferred:
        for dead in self.on_dead:
            dead(node)
        keys = self._keys
        return defer.gatherResults(
            self._link.pipeline(
                [("DEL", keys.held(node)), ("DEL", keys.sessions(node)), ("SREM", keys.nodes, node)]
            )
        )
