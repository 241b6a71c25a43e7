"""Keepalive through Autobahn's auto-ping, on the in-memory listener (conftest.py `server`):
a peer that answers nothing is dropped within ping_interval + ping_timeout, one that answers
pings stays, and any frame it sends counts as a sign of life."""

from chatd.config import load_config

# The in-memory listener keeps the default keepalive settings.
DEFAULTS = load_config(None).limits
INTERVAL, TIMEOUT = DEFAULTS.ping_interval, DEFAULTS.ping_timeout


def silent(client) -> None:
    """This peer answers no ping (and so sends no pong)."""
    client.onPing = lambda payload: None


def test_the_listener_uses_the_configured_keepalive(server):
    assert (server.factory.autoPingInterval, server.factory.autoPingTimeout) == (INTERVAL, TIMEOUT)
    assert INTERVAL > 0


def test_a_dead_peer_is_dropped_within_interval_plus_timeout(server, reactor):
    client = server.welcomed("alice")
    silent(client)
    reactor.advance(INTERVAL + 1)
    server.flush()  # the ping reaches the peer, which says nothing
    assert server.broadcaster.user_count == 1
    reactor.advance(TIMEOUT + 1)
    server.flush()
    assert server.broadcaster.user_count == 0
    assert client.server_side.wasClean is False


def test_a_peer_that_answers_pings_stays(server, reactor):
    client = server.welcomed("alice")
    for _ in range(5):
        reactor.advance(INTERVAL + 1)
        server.flush()  # ping, pong
        reactor.advance(TIMEOUT + 1)
        server.flush()
    assert server.broadcaster.user_count == 1
    assert client.close_code is None


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
    assert server.broadcaster.user_count == 1
    assert client.close_code is None
