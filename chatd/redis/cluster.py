"""A chatd node's part in a cluster: its two connections to Redis and what runs on them.

- `commands`: scripts, reads, leases. `subscriber`: the rooms' channels and the probe.
- `feeds` keep the rooms this node holds current (feeds.py); `sequencer` posts (sequencer.py);
  `nodes` renews this node's lease and lets go of dead nodes' members (nodes.py).
- What belongs to a user or to the whole cluster rather than to a room: each user's sessions
  counted over every node (session_counts.py), display names (renames.py), the server API's
  disconnects (disconnects.py) and room list (room_index.py), told through notices.py.
- The probe: every `[redis] probe_interval` the node publishes to a channel of its own and
  expects to hear it back on its subscription. Pub/sub can die silently while the connection
  looks fine (Centrifugo #1189); a probe that stays unheard for three intervals makes the
  subscription again (and the feeds catch up from the logs); unheard for `[redis] cutoff`,
  the node is cut off: it closes its clients with 1001 so that they reconnect to a node that
  is not, and keeps doing so to any that join until it hears the probe again.

`check_durability` runs before the daemon starts (a blocking check, like the rest of the
configuration): an ack in Redis mode is only as durable as Redis's append-only file.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import hiredis
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatd.config import ConfigError, RedisConfig
from chatd.events import Event
from chatd.metrics import Metrics
from chatd.read_markers import Marker
from chatd.redis.archiver import SCRIPTS as ARCHIVER_SCRIPTS
from chatd.redis.archiver import Archiver
from chatd.redis.client import RedisLink, hash_of
from chatd.redis.disconnects import Disconnects
from chatd.redis.feeds import CLOSE_SERVICE_RESTART, EPHEMERAL, SYNC, Feeds
from chatd.redis.history import StreamHistory
from chatd.redis.keys import Keys
from chatd.redis.nodes import Nodes
from chatd.redis.notices import Notices
from chatd.redis.reads import READ, parse_marker
from chatd.redis.renames import RENAME, Renames
from chatd.redis.room_index import RoomIndex
from chatd.redis.sequencer import POST, RedisSequencer
from chatd.redis.session_counts import SESSIONS, SessionCounts
from chatd.rooms import Room

CLOSE_GOING_AWAY = 1001
REQUIRED = {
    "appendonly": "yes",
    "appendfsync": "always",
    "maxmemory-policy": "noeviction",
}


def node_name(config: RedisConfig) -> str:
    return config.node or f"{socket.gethostname()}-{os.getpid()}"


class Cluster:
    _log = Logger()

    def __init__(
        self,
        reactor,
        config: RedisConfig,
        metrics: Metrics,
        retry_window: float,
        make_epoch: Callable[[], str],
    ):
        self._clock = reactor
        self.config = config
        self.keys = keys = Keys(config.key_prefix)
        self.node = node_name(config)
        self.commands = RedisLink(
            reactor, config, scripts=(POST, SYNC, READ, SESSIONS, RENAME, *ARCHIVER_SCRIPTS)
        )
        self.archiver: Archiver | None = None  # this node may archive ([redis] archiver)
        self.desk = None  # the support desk's part in the cluster (desk.py), when it is on
        self.subscriber = RedisLink(
            reactor,
            config,
            on_push=self._on_push,
            on_chunk_end=self._chunk_end,
            name="subscriber",
        )
        self.server = None  # set by attach_server
        self._probe_channel = keys.probe(self.node).encode()
        self.feeds = Feeds(
            reactor,
            self.commands,
            self.subscriber,
            keys,
            make_room=self._make_room,
            deliver=self._deliver,
            reset=self._reset,
            memory_events=lambda name: self.server.directory.memory_events(name),
            read_transcript=self._read_transcript,
            gap_timeout=config.probe_interval,
            ephemeral=self._heard_ephemeral,
            adopted=self._adopted,
        )
        self.feeds.listen(self._probe_channel, self._probe_heard)
        self.notices = Notices(self.commands, keys, self.node)
        self.feeds.listen(self.notices.channel, self.notices.hear)
        self.sequencer = RedisSequencer(
            self.commands, keys, self.node, self.feeds, retry_window, make_epoch, metrics
        )
        self.nodes = Nodes(
            reactor,
            self.commands,
            keys,
            self.node,
            config.node_lease,
            self.sequencer,
            self._held_here,
        )
        self.session_counts = SessionCounts(self.commands, keys, self.node)
        self.renames = Renames(self.commands, keys, self.notices, self.node)
        self.disconnects = Disconnects(self.notices, self.session_counts, self.node)
        self.room_index = RoomIndex(self.commands, keys)
        self._probe_loop = LoopingCall(self._probe)
        self._probe_loop.clock = reactor
        self._heard = reactor.seconds()
        # When the subscription was last made: a new one gets three intervals to hear the
        # probe before it is made again (else a node that was cut off never recovers).
        self._subscribed = self._heard
        self.subscriber.on_up.append(self._subscription_up)
        self.cut_off = False

    def attach_server(self, server) -> None:
        self.server = server
        server.directory.replicas = self.feeds
        self.history = StreamHistory(self.commands, self.keys, server.store)
        server.pipeline.relay = self._relay
        self.session_counts.attach(server)
        self.renames.attach(server)
        self.disconnects.attach(server)

    # -- ephemeral fan-out across nodes -------------------------------------------------------

    def _relay(self, room: Room, lines: list[bytes], skip_user: str | None) -> None:
        """Publish frames that are no event on the room's channel: `~NODE SKIP_USER` and the
        frames, a line each (JSON has no raw newline). At most once, as the frames are."""
        if not self.commands.connected:
            return
        head = f"{EPHEMERAL.decode()}{self.node} {skip_user or ''}".encode()
        payload = b"\n".join([head, *lines])
        channel = self.keys.channel(room.name)
        self.commands.execute("PUBLISH", channel, payload).addErrback(lambda _failure: None)

    def _heard_ephemeral(self, room: Room, payload: bytes) -> None:
        head, *lines = payload.split(b"\n")
        node, _sep, skip_user = head.decode().partition(" ")
        if node != self.node and lines:
            self.server.pipeline.tell_room(room, lines, skip_user or None, relay=False)
            self.server.read_markers.heard(room, lines)

    def _adopted(self, room: Room, reads: list[bytes], sanctions: list[bytes]) -> None:
        """A room just taken on: its read markers and sanctions as Redis has them."""
        self._adopt_reads(room, hash_of(reads))
        self.server.moderation.adopt(room.name, hash_of(sanctions))
        self.server.moderation.revise_snapshot(room)

    def _adopt_reads(self, room: Room, stored: dict[str, str]) -> None:
        markers = {}
        for user, value in stored.items():
            try:
                epoch, seq, ts = parse_marker(value)
            except ValueError:
                self._log.error(
                    "an unreadable read marker in room {room}: {value!r}",
                    room=room.name,
                    value=value[:80],
                )
                continue
            markers[user] = Marker(epoch, seq, ts)
        self.server.read_markers.adopt(room.name, markers)

    # -- what the feeds need of the server ----------------------------------------------------

    def _make_room(self, name: str, epoch: str, recent: list[Event], seq: int) -> Room:
        return self.server.directory.adopt(name, epoch, recent, seq)

    def _deliver(self, room: Room, events: list[Event], own: list[Event]) -> None:
        for event in events:
            if event.kind == "presence":
                self._note_presence(room, event)
        self.server.pipeline.deliver_sequenced(room, events, own)
        self.server.directory.touch(room)

    @staticmethod
    def _note_presence(room: Room, event: Event) -> None:
        """Members present through other nodes, as their presence events say."""
        record = event.record
        user = record.get("user")
        if record.get("event") == "join" and user not in room.members:
            room.others[user] = record.get("name", user)
        elif record.get("event") == "leave":
            room.others.pop(user, None)

    def _reset(self, room: Room, why: str) -> None:
        """The room's replica cannot be kept exact: its sessions reconnect and join again."""
        for session in list(room.sessions):
            if session.connection is not None:
                session.connection.close_with(CLOSE_SERVICE_RESTART, f"{why}; join again")
        if self.server.directory.rooms.get(room.name) is room:
            self.server.directory.unload(room)

    def _read_transcript(self, name: str, epoch: str, after: int, limit: int) -> list[Event]:
        return self.server.store.events_after(name, epoch, after, limit)

    def _held_here(self) -> set[str]:
        return {
            f"{room.name} {user}"
            for room in self.server.directory.rooms.values()
            for user in room.members
        }

    def _chunk_end(self) -> None:
        self.feeds.end_of_chunk()

    def _on_push(self, reply: list) -> None:
        self.feeds.on_push(reply)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._log.info(
            "node {node} joins the cluster on Redis at {url}",
            node=self.node,
            url=_without_password(self.config.url),
        )
        self._heard = self._clock.seconds()
        self.commands.start()
        self.subscriber.start()
        self.nodes.start()
        if self.archiver is not None:
            self.commands.on_up.append(self._start_archiver)
        if self.desk is not None:
            self.desk.start()
        self._probe_loop.start(self.config.probe_interval, now=False)

    def _start_archiver(self, _protocol) -> None:
        """Once Redis first answers: the archiver has no reason to complain before."""
        self.commands.on_up.remove(self._start_archiver)
        self.archiver.start()

    def stop(self) -> defer.Deferred:
        if self._probe_loop.running:
            self._probe_loop.stop()
        stopping = [self.nodes.stop()]
        if self.archiver is not None:
            stopping.append(self.archiver.stop())
        if self.desk is not None:
            stopping.append(defer.maybeDeferred(self.desk.stop))
        released = defer.gatherResults(stopping)

        def close(_ignored):
            return defer.gatherResults([self.commands.stop(), self.subscriber.stop()])

        return released.addBoth(close)

    # -- the probe ----------------------------------------------------------------------------

    def _probe(self) -> None:
        now = self._clock.seconds()
        if self.commands.connected:
            self.commands.execute("PUBLISH", self._probe_channel, repr(now)).addErrback(
                lambda _failure: None
            )
        silent = now - self._heard
        interval = self.config.probe_interval
        if (
            silent > 3 * interval
            and now - self._subscribed > 3 * interval
            and self.subscriber.protocol is not None
        ):
            self._log.warn(
                "node {node} has not heard its own probe for {silent:.1f}s: making its"
                " subscription again",
                node=self.node,
                silent=silent,
            )
            self.subscriber.protocol.transport.abortConnection()
        if silent > self.config.cutoff:
            if not self.cut_off:
                self.cut_off = True
                self._log.critical(
                    "node {node} is cut off from Redis ({silent:.1f}s without its probe):"
                    " closing its clients with 1001 so that they move to another node",
                    node=self.node,
                    silent=silent,
                )
            for session in list(self.server.sessions):
                if session.connection is not None:
                    session.connection.close_with(CLOSE_GOING_AWAY, "lost the cluster; reconnect")

    def _subscription_up(self, _protocol) -> None:
        self._subscribed = self._clock.seconds()

    def _probe_heard(self, _payload: bytes) -> None:
        self._heard = self._clock.seconds()
        if self.cut_off:
            self.cut_off = False
            self._log.info("node {node} hears Redis again", node=self.node)


def _without_password(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _sep, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def check_durability(config: RedisConfig, source: str) -> list[str]:
    """Ask Redis, before the daemon starts, whether an ack would be durable; raises
    ConfigError if Redis cannot be reached or is not, unless `accept_weak_durability`.
    Returns the weaknesses accepted (to log)."""
    address = config.address
    reader = hiredis.Reader()
    commands = []
    if address.password:
        commands.append(("AUTH", address.password))
    commands.extend(("CONFIG", "GET", name) for name in REQUIRED)
    try:
        with socket.create_connection(
            (address.host, address.port), timeout=config.connect_timeout
        ) as sock:
            sock.settimeout(config.command_timeout + config.connect_timeout)
            sock.sendall(b"".join(map(hiredis.pack_command, commands)))
            replies = []
            while len(replies) < len(commands):
                data = sock.recv(65536)
                if not data:
                    raise OSError("Redis closed the connection")
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    replies.append(reply)
    except OSError as error:
        raise ConfigError(
            source,
            "redis",
            "url",
            f"cannot reach Redis at {_without_password(config.url)}: {error}",
        ) from None
    weak = []
    for name, reply in zip(REQUIRED, replies[-len(REQUIRED) :], strict=True):
        if isinstance(reply, hiredis.ReplyError):
            weak.append(f"{name} cannot be read ({reply})")
            continue
        value = reply[1].decode() if len(reply) == 2 else "?"
        if value != REQUIRED[name]:
            weak.append(f"{name} is {value}, not {REQUIRED[name]}")
    if isinstance(replies[0], hiredis.ReplyError):
        raise ConfigError(source, "redis", "url", f"Redis refused chatd: {replies[0]}")
    if weak and not config.accept_weak_durability:
        raise ConfigError(
            source,
            "redis",
            "url",
            "Redis would lose acknowledged messages: "
            + "; ".join(weak)
            + " (set them in redis.conf, or accept_weak_durability = yes)",
        )
    return weak
