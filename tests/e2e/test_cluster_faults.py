"""Redis mode when Redis fails: restarted (SIGKILL and start on the same data), frozen
(SIGSTOP/SIGCONT) past a command timeout and past the cut-off; and the start-up checks of
its durability. The nodes are real `twistd -n chatd` processes (tests/e2e/conftest.py)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error

import pytest
from chatd_harness import Client, assert_contiguous, wait_for
from cluster_settings import COMMAND_TIMEOUT, CUTOFF
from redis_harness import RedisServer
from websockets.exceptions import ConnectionClosed

ROOM = "lobby"
SLACK = 3.0  # for a loaded machine


def transcript(node) -> list[dict]:
    return node.transcript(ROOM) if node.transcript_path(ROOM).exists() else []


class Poster:
    """Posts messages one after the other from its own thread, as a careful client does:
    on `unavailable` or a lost connection it sends the same message again, with the same
    id, until it is acknowledged (reconnecting, and joining again, when needed)."""

    def __init__(self, clients, node, name: str):
        self.clients, self.node, self.name = clients, node, name
        self.acked: dict[str, int] = {}  # message id -> seq, in the order acknowledged
        self.unavailable = 0
        self.reconnects = 0
        self.epochs: set[str] = set()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.client: Client | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Poster:
        self._connect()
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), f"{self.name} is stuck"
        if self.error is not None:
            raise self.error

    def _connect(self) -> None:
        while True:
            try:
                client = self.clients(self.node.url("ws"))
                joined = self._hello_and_join(client)
                if joined is not None:
                    self.epochs.add(joined["epoch"])
                    self.client = client
                    return
                self.unavailable += 1
                client.close()
            except (ConnectionClosed, OSError):
                pass
            time.sleep(0.1)  # back off before connecting again

    def _hello_and_join(self, client: Client) -> dict | None:
        """The `joined` reply; None when the node answered `unavailable`, to the hello (while
        Redis is away the user's sessions cannot be counted) or to the join."""
        client.name = self.name
        steps = (
            ({"type": "hello", "name": self.name}, "welcome"),
            ({"type": "join", "room": ROOM, "id": "join"}, "joined"),
        )
        for request, answer in steps:
            client.send(request)
            frame, _ = client.recv_until(lambda f, answer=answer: f["type"] in (answer, "error"))
            if frame["type"] == "error":
                assert frame["code"] == "unavailable", frame
                return None
        return frame

    def _run(self) -> None:
        try:
            n = 0
            while not self.stop.is_set():
                self._post(f"{self.name}-{n}", f"{self.name} says {n}")
                n += 1
        except BaseException as error:  # reported by finish
            self.error = error

    def _post(self, id: str, text: str) -> None:
        while True:
            try:
                self.client.send({"type": "say", "room": ROOM, "text": text, "id": id})
                frame, _ = self.client.recv_until(
                    lambda f: (
                        (f["type"] == "ack" and f["id"] == id)
                        or (f["type"] == "error" and f.get("ref") == id)
                    ),
                    timeout=COMMAND_TIMEOUT + 10,
                )
                if frame["type"] == "ack":
                    self.acked[id] = frame["seq"]
                    return
                assert frame["code"] == "unavailable", frame
                self.unavailable += 1
                time.sleep(0.05)  # back off before the retry
            except (ConnectionClosed, OSError):
                self.reconnects += 1
                with contextlib.suppress(Exception):
                    self.client.close()
                self._connect()


def test_a_redis_restart_loses_no_acknowledged_message_and_reuses_no_seq(
    cluster, clients, redis_server
):
    a, b = cluster
    carol = clients(b.url("ws"))
    carol.hello("carol")
    carol.join(ROOM)
    posters = [Poster(clients, a, "ann").start(), Poster(clients, b, "bob").start()]
    try:
        wait_for(lambda: all(len(p.acked) >= 10 for p in posters), 20, "posts before")
        redis_server.kill()
        before = {p.name: dict(p.acked) for p in posters}
        try:
            # A post during the outage is refused as `unavailable` (the posters retry theirs).
            carol.send({"type": "say", "room": ROOM, "text": "in the outage", "id": "c-1"})
            error, _ = carol.recv_until(
                lambda f: f["type"] in ("error", "ack"), timeout=COMMAND_TIMEOUT + SLACK
            )
            assert (error["type"], error["code"], error["ref"]) == ("error", "unavailable", "c-1")
        finally:
            redis_server.start()
        wait_for(
            lambda: all(len(p.acked) >= len(before[p.name]) + 10 for p in posters),
            30,
            "posts after the restart",
        )
    finally:
        for poster in posters:
            poster.finish()

    assert len({epoch for p in posters for epoch in p.epochs}) == 1  # the room kept its epoch
    acked = {(p.name, id): seq for p in posters for id, seq in p.acked.items()}
    assert len(set(acked.values())) == len(acked), "a seq was given twice"
    # Seq goes on after the restart: every post acknowledged after it has a higher seq.
    for poster in posters:
        earlier = max(before[poster.name].values())
        later = [seq for id, seq in poster.acked.items() if id not in before[poster.name]]
        assert later and min(later) > earlier
        assert later == sorted(later)

    last = max(acked.values())
    wait_for(lambda: len(transcript(a)) >= last, 15, "the transcript to catch up")
    written = transcript(a)
    assert_contiguous(written, first=1)
    messages = {(e["from"], e["id"]): e["seq"] for e in written if e["type"] == "message"}
    assert len(messages) == len([e for e in written if e["type"] == "message"]), "posted twice"
    for key, seq in acked.items():
        assert messages.get(key) == seq, (key, seq)  # every acknowledged message, as acked

    # The history a joiner reads agrees with the transcript.
    dave = clients(b.url("ws"))
    dave.hello("dave")
    dave.send({"type": "history", "room": ROOM, "id": "h"})
    frame = dave.expect(type="history")
    assert frame["events"] == written[-len(frame["events"]) :]


def retry_until_acked(client, text: str, id: str) -> tuple[dict, list[dict]]:
    """Say, and say again with the same id on `unavailable`; (the ack, every frame before)."""
    frames = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        client.send({"type": "say", "room": ROOM, "text": text, "id": id})
        frame, skipped = client.recv_until(
            lambda f: f["type"] in ("ack", "error"), timeout=COMMAND_TIMEOUT + 10
        )
        frames += skipped
        if frame["type"] == "ack":
            assert frame["id"] == id
            return frame, frames
        assert (frame["code"], frame["ref"]) == ("unavailable", id), frame
        time.sleep(0.1)  # back off before the retry
    raise AssertionError(f"{id} was not acknowledged within 20s: {frames}")


def test_a_frozen_redis_gives_unavailable_then_recovers_and_dedups_the_retry(
    make_node, clients, redis_server
):
    # A cut-off longer than the freeze: this test is about the command timeout.
    a = make_node("a", redis={"cutoff": "30s"})
    b = make_node("b", redis={"cutoff": "30s"})
    ann, bob = clients(a.url("ws")), clients(b.url("wss"))
    ann.hello("ann")
    bob.hello("bob")
    ann.join(ROOM)
    bob.join(ROOM)
    ann.next_event()
    first, _ = ann.say(ROOM, "before", "a-1")

    redis_server.freeze()
    try:
        sent = time.monotonic()
        ann.send({"type": "say", "room": ROOM, "text": "frozen", "id": "a-2"})
        error = ann.expect(type="error", code="unavailable", ref="a-2")
        assert time.monotonic() - sent < COMMAND_TIMEOUT + SLACK
        assert error["code"] == "unavailable"
        assert a.running and b.running
    finally:
        redis_server.thaw()

    # The frozen call may have been carried out once Redis went on: the retry (again while
    # the node connects to Redis again, if need be) is answered with the seq it got then,
    # and the message exists once.
    ack, frames = retry_until_acked(ann, "frozen", "a-2")
    assert ack["seq"] == first["seq"] + 1
    messages = [f for f in frames if f["type"] == "message"]
    assert [(m["id"], m["seq"]) for m in messages] == [("a-2", ack["seq"])], frames
    assert bob.recv_until(lambda f: f.get("id") == "a-2")[0]["seq"] == ack["seq"]

    # A second retry is de-duplicated too (delivered nothing new), and posts go on.
    ann.send({"type": "say", "room": ROOM, "text": "frozen", "id": "a-2"})
    assert ann.expect(type="ack", id="a-2")["seq"] == ack["seq"]
    after, _ = ann.say(ROOM, "after", "a-3")
    assert after["seq"] == ack["seq"] + 1
    wait_for(lambda: len(transcript(a)) >= after["seq"], 15, "the transcript")
    assert [e["id"] for e in transcript(a) if e["type"] == "message"] == ["a-1", "a-2", "a-3"]


def readiness(node) -> tuple[int, bool]:
    """/healthz's status and its `redis` check."""
    try:
        status, _type, body = node.get("ws", "/healthz")
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    return status, json.loads(body)["checks"]["redis"]


def test_a_node_cut_off_past_the_cutoff_closes_its_clients_with_1001(
    cluster, clients, redis_server
):
    a, _b = cluster
    ann = clients(a.url("ws"))
    ann.hello("ann")
    ann.join(ROOM)
    assert readiness(a) == (200, True)

    redis_server.freeze()
    try:
        frozen = time.monotonic()
        code, _reason = ann.expect_closed(timeout=CUTOFF + SLACK + 2)
        assert code == 1001
        assert time.monotonic() - frozen > CUTOFF - 0.5  # not before the cut-off
        assert a.running
        # A load balancer's health check stops sending clients here.
        assert readiness(a) == (503, False)
    finally:
        redis_server.thaw()

    # Once it hears Redis again (its clients are sent away until then) it takes clients
    # and posts again.
    wait_for(lambda: "node a hears Redis again" in a.log_of_last_start, 15, "the probe heard")

    def rejoined():
        client = clients(a.url("ws"))
        client.hello("ann")
        client.send({"type": "join", "room": ROOM})
        with contextlib.suppress(ConnectionClosed, OSError):
            frame, _ = client.recv_until(lambda f: f["type"] in ("joined", "error"))
            if frame["type"] == "joined":
                return client
        client.close()
        return None

    again = wait_for(rejoined, 15, "the node to take clients again", interval=0.2)
    retry_until_acked(again, "back", "a-1")
    assert a.running


# -- start-up ---------------------------------------------------------------------------------


@pytest.fixture
def weak_redis(tmp_path, redis_server):
    """A redis-server that fsyncs its append-only file once a second only."""
    directory = tmp_path / "weak-redis"
    directory.mkdir()
    server = RedisServer(directory, appendfsync="everysec").start()
    yield server
    server.kill()


def refused(node) -> str:
    with pytest.raises(AssertionError, match="before it was ready"):
        node.start()
    assert node.process.returncode != 0
    return node.log_of_last_start


def test_a_redis_that_does_not_fsync_every_write_is_refused(make_node, weak_redis):
    node = make_node("a", start=False, redis={"url": weak_redis.url})
    log = refused(node)
    assert "[redis] url: Redis would lose acknowledged messages" in log, log
    assert "appendfsync is everysec, not always" in log


def test_an_unreachable_redis_is_refused(make_node, redis_server):
    node = make_node("a", start=False)
    redis_server.kill()
    log = refused(node)
    assert f"[redis] url: cannot reach Redis at {redis_server.url}" in log, log


def test_weak_durability_may_be_accepted_with_a_warning(make_node, weak_redis, clients):
    node = make_node("a", redis={"url": weak_redis.url, "accept_weak_durability": "yes"})
    log = node.log_of_last_start
    assert "[redis] accept_weak_durability: appendfsync is everysec, not always" in log, log
    ann = clients(node.url("ws"))
    ann.hello("ann")
    ann.join(ROOM)
    ann.say(ROOM, "works", "a-1")
