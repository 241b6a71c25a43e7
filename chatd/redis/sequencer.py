"""The Redis sequencer: seqs from Redis, durability from its fsynced append-only file.

Each reactor turn's posts go to Redis as one pipelined batch of post.lua calls, which give
each event its room's next seq, de-duplicate retries, append it to the room's log and publish
it. The events are then delivered by the room's feed (feeds.py), on this node as on every
other, and a sender is acknowledged only once its event has been delivered here: an ack
still never comes before its event.

The event's line is built by the script, from a head and a tail the node writes, so that it
is byte for byte what the single-process mode writes: `{"type":..,"room":..,"epoch":..,
"seq":..,"ts":..,<fields>}`.

A call Redis does not answer in time fails as `unavailable`; it may still have been carried
out (Redis was frozen, not gone), which is why clients retry with the same message id and the
script answers a retry with the seq it gave the first time.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd import errors
from chatd.errors import ChatError
from chatd.events import format_ts
from chatd.metrics import Metrics
from chatd.pipeline import Posted
from chatd.redis.client import RedisLink, Script
from chatd.redis.feeds import Feeds
from chatd.redis.keys import Keys
from chatd.rooms import Draft
from chatd.wire import encode

POST = Script("post")
CLAIMED_ALREADY = -1  # post.lua's seq for a claim on a conversation someone else holds
PRESENCE_CHANGE = {"join": 1, "leave": -1}


def line_parts(room: str, draft: Draft) -> tuple[bytes, bytes]:
    """The event's line without its epoch and seq: what comes before and after them."""
    head = encode({"type": draft.kind, "room": room})[:-1] + b","
    record = {"ts": format_ts(draft.ts), **draft.fields}
    if draft.audience is not None:
        record["audience"] = draft.audience
    return head, encode(record)[1:]


class RedisSequencer:
    _log = Logger()

    def __init__(
        self,
        link: RedisLink,
        keys: Keys,
        node: str,
        feeds: Feeds,
        retry_window: float,
        make_epoch: Callable[[], str],
        metrics: Metrics,
    ):
        self._link = link
        self._keys = keys
        self._node = node
        self._feeds = feeds
        self._retry_ms = max(int(retry_window * 1000), 1)
        self._make_epoch = make_epoch
        self._metrics = metrics
        self.failing: str | None = None
        self._failed_batches = 0

    def call(self, room: str, draft: Draft, held_by: str | None = None) -> tuple[list, list]:
        """post.lua's keys and arguments for a draft; `held_by`: the node whose presence a
        presence change updates (another one when a dead node's members are let go)."""
        keys = self._keys
        head, tail = line_parts(room, draft)
        retry_key = keys.meta(room)
        retry_ms = 0
        if draft.kind == "message" and draft.sender is not None and draft.client_id is not None:
            retry_key = keys.retry(room, draft.sender, draft.client_id)
            retry_ms = self._retry_ms
        change = 0
        user = name = assigns = ""
        if draft.kind == "presence":
            change = PRESENCE_CHANGE.get(draft.fields.get("event"), 0)
            user, name = draft.fields["user"], draft.fields["name"]
        elif draft.kind == "assignment":
            assigns = "A" + (draft.fields.get("assignee") or "")
        return (
            [
                keys.meta(room),
                keys.log(room),
                retry_key,
                keys.count(room),
                keys.names(room),
                keys.held(held_by or self._node),
                keys.unarchived,
                keys.rooms,
            ],
            [
                head,
                tail,
                self._make_epoch(),
                retry_ms,
                change,
                user,
                name,
                room,
                keys.channel(room),
                assigns,
                1 if draft.claim else 0,
            ],
        )

    def sequence(self, batch: list[Posted]) -> Deferred:
        calls = [self.call(posted.room.name, posted.draft) for posted in batch]
        done = self._link.run_many(POST, calls).addCallback(self._sequenced, batch)
        return done.addErrback(self._all_failed, batch)

    def _all_failed(self, failure, batch: list[Posted]) -> None:
        self._log.failure("sequencing a batch in Redis failed", failure)
        for posted in batch:
            posted.failed = True

    def _sequenced(self, outcomes: list, batch: list[Posted]) -> Deferred:
        waits = []
        failure = None
        for posted, (ok, reply) in zip(batch, outcomes, strict=True):
            if not ok:
                posted.failed = True
                failure = reply
                continue
            epoch, seq, stored = reply[0].decode(), reply[1], reply[2]
            room, draft = posted.room, posted.draft
            if seq == CLAIMED_ALREADY:
                posted.failed = True
                posted.refused = ChatError(
                    errors.CONFLICT, f"{room.name!r} is assigned to someone else already"
                )
                continue
            posted.seq = seq
            if seq == 0:
                if draft.kind == "presence" and draft.fields.get("event") == "leave":
                    # Still a member through another node: listed from there on.
                    user = draft.fields["user"]
                    if user not in room.members:
                        room.others[user] = draft.fields["name"]
                continue
            if posted.ack_to is not None:
                waits.append(self._feeds.delivered(room.name, epoch, seq, own=bool(stored)))
            elif stored:
                self._feeds.mark_own(room.name, epoch, seq)
        self._report(failure)
        return defer.gatherResults(waits)

    def _report(self, failure: Exception | None) -> None:
        """Log the first failure of a run of them, and the first success after it."""
        if failure is None:
            if self.failing is not None:
                self._log.info(
                    "Redis takes posts again, after {count} failed batches ({cause})",
                    count=self._failed_batches,
                    cause=self.failing,
                )
                self.failing, self._failed_batches = None, 0
            return
        self._failed_batches += 1
        cause = str(failure)
        self._metrics.transcript_write_failures.labels("redis").inc()
        if cause != self.failing:
            self.failing = cause
            self._log.critical(
                "cannot sequence events in Redis: {cause}; their senders are told"
                " `unavailable` and retry (logged once until Redis takes posts again)",
                cause=cause,
            )

    def close(self) -> None:
        """Nothing of its own to close: the cluster closes the connections."""
