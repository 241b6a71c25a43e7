"""Keepalive on the in-memory listener (conftest.py `server`): a peer that answers nothing is
dropped within ping_interval + ping_timeout, one that answers pings stays, any frame it sends
counts as a sign of life, and all of it runs on one timer however many connections there are.
The wheel itself is driven directly at the end, on a task.Clock."""

import itertools

from twisted.internet.task import Clock

from chatd.config import load_config
from chatd.keepalive import Keepalive

# The in-memory listener keeps the default keepalive settings.
DEFAULTS = load_config(None).limits
INTERVAL, TIMEOUT = DEFAULTS.ping_interval, DEFAULTS.ping_timeout


def silent(client) -> None:
    """This peer answers no ping (and so sends no pong)."""
    client.onPing = lambda payload: None


def active_calls(reactor) -> int:
    return sum(1 for call in reactor.getDelayedCalls() if call.active())


def test_one_timer_serves_every_connection(server, reactor):
    assert server.factory.autoPingInterval == 0  # not Autobahn's two timers per connection
    server.welcomed("alice")
    with_one = active_calls(reactor)
    for number in range(20):
        server.welcomed(f"user{number}")
    assert active_calls(reactor) == with_one
    assert len(server.factory.keepalive) == 21


def test_a_closed_connection_is_forgotten(server, reactor):
    client = server.welcomed("alice")
    client.sendClose(1000)
    server.flush()
    assert server.server.user_count == 0
    assert len(server.factory.keepalive) == 0


def test_a_dead_peer_is_dropped_within_interval_plus_timeout(server, reactor):
    client = server.welcomed("alice")
    silent(client)
    reactor.advance(INTERVAL + 1)
    server.flush()  # the ping reaches the peer, which says nothing
    assert server.server.user_count == 1
    reactor.advance(TIMEOUT + 1)
    server.flush()
    assert server.server.user_count == 0
    assert client.server_side.wasClean is False


def test_a_peer_that_answers_pings_stays(server, reactor):
    client = server.welcomed("alice")
    for _ in range(5):
        reactor.advance(INTERVAL + 1)
        server.flush()  # ping, pong
        reactor.advance(TIMEOUT + 1)
        server.flush()
    assert server.server.user_count == 1
    assert client.close_code is None
    assert client.pings >= 5


def test_any_frame_from_the_peer_counts_as_alive(server, reactor):
    client = server.welcomed("alice")
    silent(client)
    for _ in range(3):
        reactor.advance(INTERVAL + 1)
        server.flush()  # the ping, unanswered
        reactor.advance(TIMEOUT / 2)
        client.send_json({"type": "who", "room": "nowhere"})  # but the peer is talking
        server.flush()
        reactor.advance(TIMEOUT / 2 + 1)
        server.flush()
    assert server.server.user_count == 1
    assert client.close_code is None


class Peer:
    """A connection as the wheel sees it: when it was last heard, and what it was told."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.last_heard = clock.seconds()
        self.pinged_at: list[float] = []
        self.dropped_at: float | None = None

    def hear(self) -> None:
        self.last_heard = self.clock.seconds()

    def send_ping(self) -> None:
        self.pinged_at.append(self.clock.seconds())

    def drop_silent(self) -> None:
        self.dropped_at = self.clock.seconds()


def run(clock: Clock, seconds: float, step: float = 0.25, each=lambda: None) -> None:
    for _ in range(int(seconds / step)):
        clock.advance(step)
        each()


def test_the_wheel_pings_after_interval_of_silence_and_drops_after_timeout():
    clock = Clock()
    clock.advance(100.3)
    keepalive = Keepalive(clock, interval=30, timeout=10)
    peer = Peer(clock)
    keepalive.watch(peer)
    run(clock, 29.5)
    assert peer.pinged_at == []
    run(clock, 1.5)
    assert len(peer.pinged_at) == 1 and 130.3 <= peer.pinged_at[0] <= 131.3
    run(clock, 11)
    assert peer.dropped_at is not None and peer.dropped_at <= peer.pinged_at[0] + 11
    assert len(keepalive) == 0


def test_a_peer_that_keeps_talking_is_never_pinged_nor_dropped():
    clock = Clock()
    keepalive = Keepalive(clock, interval=30, timeout=10)
    talker, silent = Peer(clock), Peer(clock)
    keepalive.watch(talker)
    keepalive.watch(silent)
    run(clock, 300, each=talker.hear)
    assert (talker.pinged_at, talker.dropped_at) == ([], None)
    assert silent.dropped_at is not None
    assert len(keepalive) == 1


def test_an_answered_ping_keeps_the_peer_and_pings_again_an_interval_later():
    clock = Clock()
    keepalive = Keepalive(clock, interval=30, timeout=10)
    peer = Peer(clock)
    keepalive.watch(peer)

    def answer():
        if peer.pinged_at and peer.last_heard < peer.pinged_at[-1]:
            peer.hear()  # the pong

    run(clock, 200, each=answer)
    assert peer.dropped_at is None
    gaps = [later - earlier for earlier, later in itertools.pairwise(peer.pinged_at)]
    assert len(peer.pinged_at) >= 5 and all(30 <= gap <= 32 for gap in gaps)


def test_one_call_is_scheduled_for_any_number_of_peers_and_none_when_all_are_gone():
    clock = Clock()
    keepalive = Keepalive(clock, interval=30, timeout=10)
    peers = [Peer(clock) for _ in range(1000)]
    for number, peer in enumerate(peers):
        clock.advance(0.01 * (number % 7))
        keepalive.watch(peer)
    assert len(clock.getDelayedCalls()) == 1
    for peer in peers:
        keepalive.forget(peer)
    run(clock, 2)
    assert clock.getDelayedCalls() == []
