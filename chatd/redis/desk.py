"""The support desk across nodes (Redis mode): one queue, one roster, one assigner.

- **Every node follows every conversation in the queue**: it holds a replica of each one's room
  (kept in memory with nobody in it), so its desk sees each conversation's events in seq order
  just as the single-process desk does. A node hears of a new conversation through a pattern
  subscription to the support rooms' channels: a room it does not hold is taken on and its
  entry built from its events (`SupportDesk.adopt`); rooms that only saw presence are not.
  At start and after each new subscription, the rooms the archiver has yet to write
  (`unarchived`) and the queue recovered from the transcripts are taken on the same way, so a
  message published while the node was not listening is not missed.
- **Agents**: each node stores its agents' session counts in Redis (`node:N:agents`) and what
  each agent last said (`desk:chosen`), then tells the other nodes with a notice; a new
  subscription reads both back. A dead node's agents go offline when nodes.py reaps it.
- **One node assigns**: auto-assignment and `unattended` events are the duty of the node that
  holds the desk lease (lease.lua, as the archiver's). A claim is checked in post.lua, so two
  nodes never both assign one conversation, even while the lease moves.

A conversation's room stays in every node's memory while it is in the queue: a desk of many
thousand live conversations costs each node that many replicas (and subscriptions).
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatd.redis.archiver import LEASE
from chatd.redis.client import hash_of
from chatd.rooms import Room
from chatd.support import PREFIX, SupportDesk


class SharedDesk:
    _log = Logger()

    def __init__(self, clock, cluster, desk: SupportDesk, directory, lease: float):
        self._clock = clock
        self._cluster = cluster
        self._commands = cluster.commands
        self._keys = keys = cluster.keys
        self.node = cluster.node
        self._desk = desk
        self._directory = directory
        self._lease = lease
        self._leading_until = 0.0
        self._leading = False
        self._taking: set[str] = set()  # rooms being taken on
        self._channel_start = len(keys.channel("")) - len("}:events")
        self._agents_unstored = False  # a write of this node's agents failed: write them all
        self._lease_loop = LoopingCall(self._tick)
        self._lease_loop.clock = clock
        desk.shared = self
        desk.followed.append(self._keep)
        desk.dropped.append(self._let_go)
        pattern = keys.channels_of_rooms_named(PREFIX).encode()
        cluster.feeds.listen_pattern(pattern, self._heard)
        cluster.notices.on("agent", self._heard_agent)
        cluster.notices.on("availability", self._heard_availability)
        cluster.notices.on("node_gone", self._heard_node_gone)
        cluster.nodes.on_dead.append(self._node_dead)
        cluster.commands.on_up.append(self._catch_up)
        cluster.subscriber.on_up.append(self._catch_up)

    def start(self) -> None:
        self._lease_loop.start(self._lease / 3, now=True)

    def stop(self):
        if self._lease_loop.running:
            self._lease_loop.stop()
        if self._leading and self._commands.connected:
            self._leading = False
            return self._commands.run(LEASE, [self._keys.desk_leader], [self.node, 0]).addErrback(
                lambda _failure: None
            )
        return None

    # -- the one node that assigns ------------------------------------------------------------

    def leads(self) -> bool:
        """Whether this node does the desk's one-at-a-time duties now."""
        return self._leading and self._clock.seconds() < self._leading_until

    def _tick(self) -> None:
        """Every third of a lease: the lease; this node's agents again if a write of them
        failed; the other nodes' agents (a notice may have been lost)."""
        if not self._commands.connected:
            return
        self._claim()
        if self._agents_unstored:
            self._store_agents()
        self._read_agents()

    def _claim(self) -> None:
        sent = self._clock.seconds()
        claimed = self._commands.run(
            LEASE, [self._keys.desk_leader], [self.node, max(int(self._lease * 1000), 1)]
        )
        claimed.addCallbacks(self._claimed, self._failed, (sent,), None, ("claiming the lease",))

    def _claimed(self, holder: bytes | None, sent: float) -> None:
        leading = holder is not None and holder.decode() == self.node
        if leading:
            self._leading_until = sent + self._lease
        if leading and not self._leading:
            self._log.info(
                "node {node} assigns the support desk's conversations now", node=self.node
            )
            self._leading = True
            self._desk.auto_assign()
        elif self._leading and not leading:
            self._log.warn("node {node} no longer assigns the desk's conversations", node=self.node)
            self._leading = False

    # -- following the conversations ----------------------------------------------------------

    def _heard(self, channel: bytes, line: bytes) -> None:
        """An event of a support room, from any node: take the room on if it is new here."""
        name = channel[self._channel_start : -len(b"}:events")].decode()
        if name in self._directory.rooms or name in self._taking:
            return
        if line.startswith(b'{"type":"presence"'):
            return  # a customer opened the widget: no conversation until they write
        self._follow(name)

    def _follow(self, name: str) -> None:
        self._taking.add(name)
        taken = self._cluster.feeds.take_on(name, None)
        taken.addCallback(self._taken)
        taken.addErrback(self._failed, f"taking conversation {name} on")
        taken.addBoth(lambda _ignored: self._taking.discard(name))

    def _taken(self, room: Room | None) -> None:
        if room is None or room.kept:
            return  # gone from Redis, or followed already
        if not self._desk.adopt(room):
            self._directory.touch(room)  # no conversation: it may leave memory when idle

    def _keep(self, room: Room) -> None:
        room.kept = True
        self._directory.touch(room)

    def _let_go(self, name: str) -> None:
        room = self._directory.rooms.get(name)
        if room is not None:
            room.kept = False
            self._directory.touch(room)

    def _catch_up(self, _protocol=None) -> None:
        """Both connections are up (at start, or again): read the agents back (first: an
        entry lists the agents in its room), then follow what may have been missed."""
        if not (self._commands.connected and self._cluster.subscriber.connected):
            return
        self._store_agents()
        read = self._read_agents()
        read.addCallback(lambda _: self._commands.execute("SMEMBERS", self._keys.unarchived))
        read.addCallback(self._follow_all)
        read.addErrback(self._failed, "listing the conversations to follow")

    def _follow_all(self, unarchived: list[bytes]) -> None:
        names = {name.decode() for name in unarchived if name.startswith(PREFIX.encode())}
        for name in sorted(names | set(self._desk.conversations)):
            room = self._directory.rooms.get(name)
            if room is None:
                if name not in self._taking:
                    self._follow(name)
            elif not room.kept:
                self._taken(room)

    # -- agents -------------------------------------------------------------------------------

    def agent_sessions(self, user: str, name: str, sessions: int) -> None:
        """This node holds `sessions` sessions of the agent now: store it, tell the others."""
        key = self._keys.agents(self.node)
        if sessions:
            stored = self._commands.execute("HSET", key, user, json.dumps([name, sessions]))
        else:
            stored = self._commands.execute("HDEL", key, user)
        stored.addErrback(self._unstored)
        self._cluster.notices.publish("agent", user=user, name=name, sessions=sessions)

    def chose(self, user: str, status: str) -> None:
        """The agent said they are online or away (on this node): every node hears it."""
        stored = self._commands.execute("HSET", self._keys.chosen, user, status)
        stored.addErrback(self._failed, f"storing agent {user}'s availability")
        self._cluster.notices.publish("availability", user=user, status=status)

    def _heard_agent(self, node: str, notice: dict) -> None:
        if node != self.node:
            self._desk.agent_elsewhere(node, notice["user"], notice["name"], notice["sessions"])

    def _heard_availability(self, node: str, notice: dict) -> None:
        if node != self.node:
            self._desk.chosen_elsewhere(notice["user"], notice["status"])

    def _heard_node_gone(self, _node: str, notice: dict) -> None:
        if notice["gone"] != self.node:
            self._desk.node_gone(notice["gone"])

    def _node_dead(self, node: str) -> None:
        """nodes.py reaps a dead node: its agents' sessions go with it, on every node."""
        gone = self._commands.execute("DEL", self._keys.agents(node))
        gone.addErrback(self._failed, f"forgetting node {node}'s agents")
        self._cluster.notices.publish("node_gone", gone=node)

    def _store_agents(self) -> None:
        """Write this node's agents again (another node may have taken it for dead)."""
        key = self._keys.agents(self.node)
        here = self._desk.roster.here()
        commands = [("DEL", key)]
        if here:
            fields = [item for user, name, n in here for item in (user, json.dumps([name, n]))]
            commands.append(("HSET", key, *fields))
        self._agents_unstored = False
        for stored in self._commands.pipeline(commands):
            stored.addErrback(self._unstored)

    def _unstored(self, failure) -> None:
        if not self._agents_unstored:
            self._failed(failure, "storing this node's agents (written again later)")
        self._agents_unstored = True

    def _read_agents(self) -> Deferred:
        """Fires once the other nodes' agents are read (or could not be)."""
        listed = self._commands.execute("SMEMBERS", self._keys.nodes)
        listed.addCallback(self._read_agents_of)
        return listed.addErrback(self._failed, "reading the agents of the other nodes")

    def _read_agents_of(self, members: list[bytes]) -> Deferred:
        nodes = sorted(name.decode() for name in members if name.decode() != self.node)
        keys = self._keys
        replies = self._commands.pipeline(
            [("HGETALL", keys.chosen)] + [("HGETALL", keys.agents(node)) for node in nodes]
        )
        chosen, held = replies[0], replies[1:]
        chosen.addCallback(self._apply_chosen)
        chosen.addErrback(self._failed, "reading the agents' availability")
        for node, reply in zip(nodes, held, strict=True):
            reply.addCallback(self._apply_held, node)
            reply.addErrback(self._failed, f"reading node {node}'s agents")
        return defer.gatherResults(replies)

    def _apply_chosen(self, flat: list[bytes]) -> None:
        for user, status in hash_of(flat).items():
            if self._desk.roster.chosen_by(user) != status:
                self._desk.chosen_elsewhere(user, status)

    def _apply_held(self, flat: list[bytes], node: str) -> None:
        now = {user: json.loads(value) for user, value in hash_of(flat).items()}
        for user in self._desk.roster.held_by(node) - set(now):
            self._desk.agent_elsewhere(node, user, user, 0)
        for user, (name, sessions) in now.items():
            self._desk.agent_elsewhere(node, user, name, sessions)

    def _failed(self, failure, doing: str) -> None:
        self._log.warn(
            "support desk: {doing} in Redis failed: {error}",
            doing=doing,
            error=failure.getErrorMessage(),
        )
