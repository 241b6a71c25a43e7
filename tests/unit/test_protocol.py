"""ChatServerProtocol end to end in memory: a real Autobahn client talks to the real server
protocol over iosim's fake transports, with a MemoryReactorClock as the only clock
(the `server` fixture, in conftest.py)."""

import dataclasses
import json

import pytest
from autobahn.websocket.protocol import WebSocketProtocol

from chatd import errors


def error_for(server, client, frame: dict | bytes) -> dict:
    before = len(client.frames)
    if isinstance(frame, bytes):
        client.sendMessage(frame)
    else:
        client.send_json(frame)
    server.flush()
    [reply] = client.frames[before:]
    assert reply["type"] == "error"
    return reply


# -- connection ---------------------------------------------------------------------------------


def test_tcp_nodelay_is_set_on_accepted_connections(server):
    server.connect()
    assert server.server_transports[0].getTcpNoDelay() is True


def test_the_opening_handshake_completes(server):
    client = server.connect()
    assert client.opened
    assert client.close_code is None


def test_a_compression_offer_is_declined(server):
    client = server.connect()
    assert client.opened
    assert client.websocket_extensions_in_use == []


def test_each_listener_holds_its_options_in_its_own_protocol_class(server):
    client = server.connect()
    protocol = client.server_side
    assert type(protocol) is server.factory.protocol
    assert "maxMessagePayloadSize" not in vars(protocol)  # not copied per connection
    assert protocol.maxMessagePayloadSize == server.limits.max_message_bytes
    server.factory.setProtocolOptions(maxMessagePayloadSize=4096)
    assert server.connect().server_side.maxMessagePayloadSize == 4096
    # an open connection keeps what it opened with
    assert protocol.maxMessagePayloadSize == server.limits.max_message_bytes


def test_hello_is_welcomed(server):
    client = server.connect()
    client.send_json({"type": "hello", "name": "alice", "id": "h1"})
    server.flush()
    [welcome] = client.frames
    session, secret = welcome.pop("session"), welcome.pop("secret")
    resume = welcome.pop("resume")
    assert welcome == {
        "type": "welcome",
        "user": "alice",
        "name": "alice",
        "roles": [],
        "resumed": False,
        "max_text_chars": 100,
    }
    assert resume.startswith(session + ".") and len(resume) > len(session) + 16
    assert len(secret) >= 16 and secret not in resume
    assert server.server.sessions.of_user("alice")[0].id == session


def test_join_replies_joined_then_the_presence_event(server):
    client = server.welcomed("alice")
    client.send_json({"type": "join", "room": "lobby", "id": "j1"})
    server.flush()
    joined, presence = client.frames[1:]
    assert (joined["type"], joined["ref"], joined["members"]) == ("joined", "j1", ["alice"])
    assert (presence["type"], presence["seq"]) == ("presence", joined["seq"] + 1)


def test_say_delivers_the_message_to_everyone_then_acks_the_sender(server):
    alice = server.joined("alice")
    bob = server.joined("bob")
    alice.send_json({"type": "say", "room": "lobby", "text": "hi bob", "id": "c-1"})
    server.flush()
    message = alice.frames[-2]
    assert (message["type"], message["from"], message["text"]) == ("message", "alice", "hi bob")
    assert alice.frames[-1] == {"type": "ack", "id": "c-1", "seq": message["seq"]}
    assert bob.frames[-1] == message
    assert bob.of_type("ack") == []


def test_from_is_the_welcomed_name_whatever_the_frame_says(server):
    alice = server.joined("alice")
    alice.send_json({"type": "say", "room": "lobby", "text": "x", "id": "c", "from": "mallory"})
    server.flush()
    assert alice.of_type("message")[-1]["from"] == "alice"


def test_leave_replies_left_and_the_others_see_it(server):
    alice = server.joined("alice")
    bob = server.joined("bob")
    bob.send_json({"type": "leave", "room": "lobby", "id": "l1"})
    server.flush()
    assert bob.frames[-1] == {"type": "left", "room": "lobby", "ref": "l1"}
    assert (alice.frames[-1]["user"], alice.frames[-1]["event"]) == ("bob", "leave")


def test_who_and_history(server):
    alice = server.joined("alice")
    server.joined("bob")
    alice.send_json({"type": "who", "room": "lobby"})
    alice.send_json({"type": "history", "room": "lobby", "limit": 1})
    server.flush()
    members, history = alice.frames[-2:]
    assert members == {
        "type": "members",
        "room": "lobby",
        "members": ["alice", "bob"],
        "names": {"alice": "alice", "bob": "bob"},
        "ref": None,
    }
    assert history["type"] == "history"
    assert [(event["user"], event["event"]) for event in history["events"]] == [("bob", "join")]


def test_closing_the_connection_leaves_every_room_and_frees_the_name(server):
    alice = server.joined("alice")
    bob = server.joined("bob")
    bob.sendClose()
    server.flush()
    assert (alice.frames[-1]["user"], alice.frames[-1]["event"]) == ("bob", "leave")
    assert server.welcomed("bob").frames[-1]["user"] == "bob"


# -- errors keep the connection open -----------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code", "ref"),
    [
        (b"{not json", errors.BAD_JSON, None),
        (b"[1, 2]", errors.BAD_FRAME, None),
        ({"type": "dance", "id": "d1"}, errors.UNKNOWN_TYPE, "d1"),
        ({"type": "hello", "name": "bob", "id": "h2"}, errors.ALREADY_WELCOMED, "h2"),
        ({"type": "join", "room": "Not A Room", "id": "j9"}, errors.BAD_ROOM, "j9"),
        ({"type": "who", "room": "lobby", "id": "no spaces"}, errors.BAD_ID, None),
        ({"type": "say", "room": "lobby", "text": "no id"}, errors.BAD_ID, None),
        ({"type": "say", "room": "lobby", "text": " ", "id": "c1"}, errors.BAD_TEXT, "c1"),
        (
            {"type": "say", "room": "lobby", "text": "x" * 101, "id": "c2"},
            errors.TEXT_TOO_LONG,
            "c2",
        ),
        ({"type": "say", "room": "elsewhere", "text": "hi", "id": "c3"}, errors.NOT_JOINED, "c3"),
        ({"type": "leave", "room": "elsewhere", "id": "l1"}, errors.NOT_JOINED, "l1"),
        ({"type": "who", "room": "nowhere", "id": "w1"}, errors.UNKNOWN_ROOM, "w1"),
        ({"type": "history", "room": "nowhere"}, errors.UNKNOWN_ROOM, None),
    ],
)
def test_a_bad_frame_gets_an_error_frame_and_the_connection_stays_open(server, frame, code, ref):
    client = server.joined("alice")
    reply = error_for(server, client, frame)
    assert (reply["code"], reply["ref"]) == (code, ref)
    assert reply["message"]
    client.send_json({"type": "who", "room": "lobby"})
    server.flush()
    assert client.frames[-1]["type"] == "members"
    assert client.close_code is None


def test_a_frame_before_hello_is_hello_required(server):
    client = server.connect()
    reply = error_for(server, client, {"type": "join", "room": "lobby", "id": "j1"})
    assert (reply["code"], reply["ref"]) == (errors.HELLO_REQUIRED, "j1")


def test_a_bad_name_is_refused_and_hello_can_be_tried_again(server):
    client = server.connect()
    assert error_for(server, client, {"type": "hello", "name": "-x"})["code"] == errors.BAD_NAME
    client.send_json({"type": "hello", "name": "x"})
    server.flush()
    assert client.frames[-1]["type"] == "welcome"


def test_a_name_in_use_is_name_taken_ignoring_case(server):
    server.welcomed("Alice")
    client = server.connect()
    assert error_for(server, client, {"type": "hello", "name": "alice"})["code"] == (
        errors.NAME_TAKEN
    )


# -- close codes -------------------------------------------------------------------------------


def test_a_binary_message_closes_with_1003(server):
    alice = server.joined("alice")
    bob = server.joined("bob")
    bob.sendMessage(b'{"type": "who", "room": "lobby"}', isBinary=True)
    server.flush()
    assert bob.close_code == 1003
    assert (alice.frames[-1]["user"], alice.frames[-1]["event"]) == ("bob", "leave")


def test_an_oversized_message_closes_with_1009(server):
    client = server.joined("alice")
    client.send_json({"type": "say", "room": "lobby", "text": "x", "id": "c", "pad": "y" * 1100})
    server.flush()
    assert client.close_code == 1009
    assert client.of_type("ack") == []


def test_invalid_utf8_closes_with_1007(server):
    client = server.welcomed("alice")
    client.sendMessage(b'{"type": "who", "room": "\xff"}')
    server.flush()
    assert client.close_code == 1007


def test_an_internal_error_closes_with_1011(server, transcript_dir):
    """A room whose transcript path is a directory cannot be opened: a server fault."""
    client = server.welcomed("alice")
    (transcript_dir / "broken.jsonl").mkdir()
    client.send_json({"type": "join", "room": "broken"})
    server.flush()
    assert client.close_code == 1011
    assert server.server.user_count == 0


def test_no_hello_in_time_closes_with_1008(server, reactor):
    client = server.connect()
    reactor.advance(server.hello_timeout - 0.1)
    server.flush()
    assert client.close_code is None
    reactor.advance(0.2)
    server.flush()
    assert client.close_code == 1008


def test_a_hello_in_time_cancels_the_deadline(server, reactor):
    client = server.welcomed("alice")
    reactor.advance(server.hello_timeout * 2)
    server.flush()
    assert client.close_code is None


def test_frames_over_the_rate_are_refused_then_a_flood_is_closed(server):
    client = server.welcomed("alice")
    burst = server.limits.message_burst
    for number in range(burst - 1):  # the hello took one token
        client.send_json({"type": "leave", "room": "nowhere", "id": f"l{number}"})
    server.flush()
    assert {frame["code"] for frame in client.of_type("error")} == {errors.NOT_JOINED}
    client.send_json({"type": "leave", "room": "nowhere", "id": "over"})
    server.flush()
    assert (client.frames[-1]["code"], client.frames[-1]["ref"]) == (errors.RATE_LIMITED, "over")
    assert client.close_code is None
    for _ in range(server.limits.flood_close_after - 2):
        client.send_json({"type": "leave", "room": "nowhere"})
    server.flush()
    assert client.close_code is None
    client.send_json({"type": "leave", "room": "nowhere"})
    server.flush()
    assert client.close_code == 1008


def test_connections_over_the_per_address_limit_are_refused(make_server):
    server = make_server(max_per_ip=1)
    first = server.connect("10.0.0.1")
    second = server.connect("10.0.0.1")
    other = server.connect("10.0.0.2")
    assert (first.opened, second.opened, other.opened) == (True, False, True)
    first.sendClose()
    server.flush()
    assert server.connect("10.0.0.1").opened


def test_going_away_closes_every_connection_with_1001(server, reactor):
    clients = [server.joined("alice"), server.joined("bob")]
    drained = server.factory.go_away(reactor, timeout=5.0)
    server.flush()
    assert [client.close_code for client in clients] == [1001, 1001]
    assert drained.called


def test_going_away_gives_a_silent_peer_the_whole_timeout_then_drops_it(server, reactor):
    """The peer never reads the 1001 (nothing is pumped): it is not dropped after Autobahn's
    1 s closing-handshake timeout but after go_away's own."""
    client = server.joined("alice")
    drained = server.factory.go_away(reactor, timeout=5.0)
    reactor.advance(4.9)
    assert not drained.called
    assert client.server_side.state == WebSocketProtocol.STATE_CLOSING
    reactor.advance(0.2)
    assert drained.called
    server.flush()
    assert client.server_side.state == WebSocketProtocol.STATE_CLOSED


def test_replies_larger_than_the_incoming_limit_are_sent(server):
    """max_message_bytes (1 KiB here) limits what clients send, not the history we send."""
    members = [server.joined(f"member{number}") for number in range(12)]
    latecomer = server.joined("latecomer")
    joined = latecomer.of_type("joined")[0]
    assert len(json.dumps(joined)) > 1024
    assert [event["user"] for event in joined["history"]] == [f"member{n}" for n in range(12)]
    assert latecomer.close_code is None and all(m.close_code is None for m in members)


def test_cheap_frames_over_their_budget_are_refused_with_their_ref_and_never_close(server):
    client = server.joined("alice")
    limits = server.limits
    for number in range(limits.cheap_burst):
        client.send_json({"type": "who", "room": "lobby", "id": f"w{number}"})
    server.flush()
    assert [frame["type"] for frame in client.frames[-limits.cheap_burst :]] == (
        ["members"] * limits.cheap_burst
    )
    flood = 10 * (limits.message_burst + limits.cheap_burst + limits.flood_close_after)
    for number in range(flood):
        client.send_json({"type": "who", "room": "lobby", "id": f"x{number}"})
    server.flush()
    refusals = client.frames[-flood:]
    assert {(frame["type"], frame["code"]) for frame in refusals} == {
        ("error", errors.RATE_LIMITED)
    }
    assert [frame["ref"] for frame in refusals] == [f"x{number}" for number in range(flood)]
    assert client.close_code is None
    # Costly frames still have their own budget, untouched by the lookups.
    client.send_json({"type": "say", "room": "lobby", "text": "still here", "id": "s1"})
    server.flush()
    assert client.frames[-1] == {"type": "ack", "id": "s1", "seq": 2}


def test_says_over_their_budget_are_still_closed_after_flood_close_after(server):
    client = server.joined("alice")
    for number in range(server.limits.message_burst + server.limits.flood_close_after + 5):
        client.send_json({"type": "say", "room": "lobby", "text": "spam", "id": f"s{number}"})
    server.flush()
    assert client.close_code == 1008
    assert errors.RATE_LIMITED in {frame.get("code") for frame in client.of_type("error")}


# -- connection log lines ([server] log_connections) ---------------------------------------------


def connection_lines(log_events) -> list[tuple[str, int | None]]:
    """(user, close code) of each session-opened and connection-closed line."""
    return [
        (event["user"], event.get("code"))
        for event in log_events
        if str(event.get("log_namespace")).startswith("chatd.protocol.")
        and event["log_format"].startswith("{peer} ")
        and ("disconnected" in event["log_format"] or "(session" in event["log_format"])
    ]


def test_sessions_and_closes_are_not_logged_by_default(server, log_events):
    alice = server.joined("alice")
    alice.sendClose(1000)
    server.flush()
    assert alice.close_code == 1000
    assert connection_lines(log_events) == []


def test_log_connections_logs_each_session_and_close(server, log_events):
    server.factory.context = dataclasses.replace(server.factory.context, log_connections=True)
    alice = server.joined("alice")
    alice.sendClose(1000)
    server.flush()
    assert connection_lines(log_events) == [("alice", None), ("alice", 1000)]


def test_autobahn_counts_connections_in_and_out(server):
    """chatd runs Autobahn's connection-made and connection-lost steps itself (without their
    debug lines): the factory's count still comes back to zero."""
    alice, bob = server.welcomed("alice"), server.welcomed("bob")
    assert server.factory.countConnections == 2
    alice.sendClose(1000)
    bob.dropConnection(abort=True)
    server.flush()
    assert alice.close_code == 1000
    assert server.factory.countConnections == 0
    assert server.factory.live == set()
