"""What an open connection keeps of Autobahn's state (chatd/lean.py), and that it still
behaves as Autobahn's own: the values dropped read the same, and set ones are its own."""

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.testing import StringTransport

from chatd import lean


def test_an_open_connection_keeps_no_leftovers_and_no_shared_values(server):
    protocol = server.connect().server_side
    assert protocol.state == protocol.STATE_OPEN
    kept = vars(protocol)
    assert not set(lean.LEFTOVERS) & set(kept)
    shared = [name for name, value in lean.AT_OPEN.items() if kept.get(name, kept) is value]
    assert shared == []
    for name, value in lean.AT_OPEN.items():
        assert getattr(protocol, name) == value or name in kept
    assert len(kept) < 40  # Autobahn gives an open connection about 75


def test_values_set_after_open_are_the_connections_own(server):
    alice, bob = server.welcomed("alice"), server.welcomed("bob")
    alice.sendClose(4000, "bye")
    server.flush()
    assert alice.server_side.remoteCloseCode == 4000
    assert bob.server_side.remoteCloseCode is None
    assert type(bob.server_side).remoteCloseCode is None


def test_each_frames_unmasker_is_let_go_when_the_frame_ends(server):
    alice = server.joined("alice")
    alice.send_json({"type": "say", "room": "lobby", "text": "hi", "id": "c1"})
    server.flush()
    assert alice.frames[-1]["type"] == "ack"
    assert alice.server_side.current_frame_masker is None


def test_a_message_split_over_frames_is_still_read_whole(server):
    alice = server.joined("alice")
    payload = b'{"type": "say", "room": "lobby", "text": "in two frames", "id": "c1"}'
    alice.beginMessage()
    alice.sendMessageFrame(payload[:20])
    alice.sendMessageFrame(payload[20:])
    alice.endMessage()
    server.flush()
    assert alice.frames[-1] == {"type": "ack", "id": "c1", "seq": 2}


def test_connections_share_their_listeners_traffic_counters(server):
    alice, bob = server.joined("alice"), server.joined("bob")
    assert alice.server_side.trafficStats is bob.server_side.trafficStats is server.factory.traffic
    before = server.factory.traffic.incomingOctetsWireLevel
    alice.send_json({"type": "say", "room": "lobby", "text": "counted", "id": "c1"})
    server.flush()
    assert server.factory.traffic.incomingOctetsWireLevel > before


def test_a_new_connection_reads_as_autobahns_own_would(server):
    """chatd's `_connectionMade` sets only what differs per connection: every attribute
    Autobahn's own sets reads the same (the per-connection objects: of the same kind)."""
    ours, theirs = (server.factory.buildProtocol(None) for _ in range(2))
    for protocol in (ours, theirs):
        protocol.transport = StringTransport()

    def set_by(connection_made, protocol) -> dict:
        before = dict(vars(protocol))
        connection_made(protocol)
        return {
            name: value
            for name, value in vars(protocol).items()
            if name not in before or before[name] is not value
        }

    set_by_us = set_by(type(ours)._connectionMade, ours)
    set_by_autobahn = set_by(WebSocketProtocol._connectionMade, theirs)
    assert len(set_by_autobahn) > 30
    assert set_by_us.keys() < set_by_autobahn.keys()
    kinds = ("utf8validator", "trafficStats", "send_queue")
    for name, value in set_by_autobahn.items():
        if name not in kinds:
            assert getattr(ours, name) == value, name
    assert type(ours.utf8validator) is type(theirs.utf8validator)
    assert ours.utf8validator is not theirs.utf8validator
    assert ours.openHandshakeTimeoutCall is None  # the listener's `opening` keeps that deadline
    assert ours.trafficStats is server.factory.traffic
    assert ours.send_queue == ()
