"""Where chatd keeps things in Redis. Every key of a room carries the room in a hash tag
(`{room}`), so that one room's keys stay in one slot if Redis Cluster is used later; the
node-wide keys (`held`, `sessions`, `nodes`, `rooms`, `unarchived`) are why a first version
needs one primary.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    def meta(self, room: str) -> str:
        """Hash: the room's `epoch` and its last `seq`."""
        return f"{self.prefix}:{{{room}}}:meta"

    def log(self, room: str) -> str:
        """Stream: the room's recent events, entry id `SEQ-0`, field `e` the line."""
        return f"{self.prefix}:{{{room}}}:log"

    def channel(self, room: str) -> str:
        """Pub/sub channel: each event's line as it is sequenced."""
        return f"{self.prefix}:{{{room}}}:events"

    def retry(self, room: str, sender: str, client_id: str) -> str:
        """String, expiring: the seq given to a sender's message id (retry de-duplication)."""
        return f"{self.prefix}:{{{room}}}:retry:{len(sender)}:{sender}{client_id}"

    def count(self, room: str) -> str:
        """Hash: user -> how many nodes hold a session of the user in the room."""
        return f"{self.prefix}:{{{room}}}:count"

    def names(self, room: str) -> str:
        """Hash: user -> display name, of the room's members."""
        return f"{self.prefix}:{{{room}}}:names"

    def reads(self, room: str) -> str:
        """Hash: user -> `EPOCH SEQ TS`, each member's read marker (read.lua)."""
        return f"{self.prefix}:{{{room}}}:reads"

    def sanctions(self, room: str) -> str:
        """Hash: user key -> `{"ban": until, "mute": until}` (JSON), the sanctions in force."""
        return f"{self.prefix}:{{{room}}}:sanctions"

    def archived(self, room: str) -> str:
        """String `EPOCH SEQ`: the last event the archiver has made durable in a transcript."""
        return f"{self.prefix}:{{{room}}}:archived"

    @property
    def node_prefix(self) -> str:
        """What each key of one node starts with, before its name (sessions.lua builds the
        other nodes' `alive` and `sessions` keys from it)."""
        return f"{self.prefix}:node:"

    def held(self, node: str) -> str:
        """Hash: `ROOM USER` -> display name, for each member a node holds sessions of."""
        return f"{self.node_prefix}{node}:held"

    def sessions(self, node: str) -> str:
        """Hash: user -> how many sessions of the user the node has (in rooms or not)."""
        return f"{self.node_prefix}{node}:sessions"

    def alive(self, node: str) -> str:
        """String with an expiry: the node's lease; gone, the node is taken for dead."""
        return f"{self.node_prefix}{node}:alive"

    def probe(self, node: str) -> str:
        """Pub/sub channel a node publishes to itself, to know its subscription works."""
        return f"{self.prefix}:node:{node}:probe"

    def agents(self, node: str) -> str:
        """Hash: user -> `[name, sessions]` (JSON), the support agents a node holds."""
        return f"{self.prefix}:node:{node}:agents"

    def channels_of_rooms_named(self, start: str) -> str:
        """PSUBSCRIBE pattern: the channels of every room whose name begins with `start`."""
        return f"{_glob_escaped(self.prefix)}:{{{_glob_escaped(start)}*}}:events"

    @property
    def chosen(self) -> str:
        """Hash: user -> `online` or `away`, what each support agent last said."""
        return f"{self.prefix}:desk:chosen"

    @property
    def desk_leader(self) -> str:
        """String with an expiry: the node that runs the desk's one-at-a-time duties."""
        return f"{self.prefix}:desk:leader"

    @property
    def nodes(self) -> str:
        """Set: the nodes that have held presence or sessions (live or not yet reaped)."""
        return f"{self.prefix}:nodes"

    @property
    def rooms(self) -> str:
        """Sorted set, every score 0: the name of every room Redis has given an epoch (the
        server API's room list pages through it by name)."""
        return f"{self.prefix}:rooms"

    @property
    def unarchived(self) -> str:
        """Set: rooms with events the archiver may not have written yet."""
        return f"{self.prefix}:unarchived"

    @property
    def notices(self) -> str:
        """Pub/sub channel: node-wide notices (notices.py)."""
        return f"{self.prefix}:notices"

    @property
    def archiver(self) -> str:
        """String with an expiry: the node that archives, while its lease lasts."""
        return f"{self.prefix}:archiver"


def _glob_escaped(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
