"""Redis mode end to end, for what is a user's or the cluster's rather than a room's: display
names, the per-user session limit, and the server API's room list, room and user details and
disconnect, each seen from the node that does not hold the user or the room."""

from __future__ import annotations

import time

import pytest
from chatd_harness import RECV_TIMEOUT, api_call, mint_token, wait_for
from cluster_settings import COMMAND_TIMEOUT

SECRET = b"a-cluster-test-secret-of-at-least-32-bytes!"
KEY = "e2e-cluster-api-key-0123456789abcdef"
ROOM = "lobby"


@pytest.fixture
def nodes(make_node, tmp_path):
    """Nodes a and b in token mode (one secret) with the server API on, two sessions a user."""
    secret = tmp_path / "jwt-secret"
    secret.write_bytes(SECRET)
    keys = tmp_path / "api-keys"
    keys.write_text(f"{KEY}\n")
    keys.chmod(0o600)
    sections = {
        "auth": {"mode": "token", "secret_file": secret, "max_sessions_per_user": 2},
        "api": {"enabled": "yes", "port": 0, "keys_file": keys},
    }
    return [make_node("a", **sections), make_node("b", **sections)]


def connect(clients, node, user: str, **token):
    client = clients(node.url())
    client.hello_token(mint_token(node.config, user, **token))
    return client


def call(node, method: str, path: str, body=None) -> dict:
    status, answer = api_call(node.ports["api"], method, path, body, KEY)
    assert status == 200, answer
    return answer


def names_by_who(client, room: str) -> dict[str, str]:
    client.send({"type": "who", "room": room, "id": "w"})
    return client.expect(type="members", ref="w")["names"]


def test_a_rename_on_one_node_reaches_the_sessions_and_rooms_of_the_other(nodes, clients):
    a, b = nodes
    ann = connect(clients, a, "ann", name="Ann")
    ann.join(ROOM)
    ann.join("quiet")  # held by a only
    bob = connect(clients, b, "bob", name="Bob")
    bob.join(ROOM)
    ann_on_b = connect(clients, b, "ann", name="Ann")  # not in the room: only a session there
    ann_on_b.join("side")
    assert names_by_who(bob, ROOM) == {"ann": "Ann", "bob": "Bob"}

    ann.send({"type": "refresh", "token": mint_token(a.config, "ann", name="Annie"), "id": "r"})
    assert ann.recv_until(lambda frame: frame.get("ref") == "r")[0]["type"] == "refreshed"

    wait_for(
        lambda: names_by_who(bob, ROOM)["ann"] == "Annie", RECV_TIMEOUT, "ann renamed on b", 0.1
    )
    message, _ack = ann_on_b.say("side", "still me", "s-1")
    assert message["name"] == "Annie"
    # A client joining later on b gets the room's names from b's replica; a room b takes on
    # afresh (for the API) has them from Redis.
    assert connect(clients, b, "cat").join(ROOM)["names"]["ann"] == "Annie"
    quiet = call(b, "GET", "/api/rooms/quiet")["members"]
    assert quiet == [{"user": "ann", "name": "Annie", "sessions": 0}]


def test_the_session_limit_counts_the_sessions_on_every_node(nodes, clients):
    a, b = nodes
    first = connect(clients, a, "ann")
    connect(clients, b, "ann")
    for node in (a, b):
        third = clients(node.url())
        third.send({"type": "hello", "token": mint_token(node.config, "ann"), "id": "h"})
        refusal = third.expect(type="error", ref="h")
        assert refusal["code"] == "too_many_sessions", refusal
    assert call(b, "GET", "/api/users/ann")["sessions"] == 2

    first.close()  # its place is given back: b takes a new session of ann
    retry = clients(b.url())
    deadline = time.monotonic() + RECV_TIMEOUT
    while True:
        retry.send({"type": "hello", "token": mint_token(b.config, "ann"), "id": "h"})
        reply = retry.recv_until(lambda frame: frame["type"] in ("welcome", "error"))[0]
        if reply["type"] == "welcome":
            break
        assert reply["code"] == "too_many_sessions" and time.monotonic() < deadline, reply
        time.sleep(0.05)


def test_a_hello_while_redis_is_frozen_is_unavailable_and_may_be_sent_again(
    make_node, clients, redis_server
):
    a = make_node("a", redis={"cutoff": "30s"})  # this test is about the command timeout
    client = clients(a.url())
    redis_server.freeze()
    try:
        sent = time.monotonic()
        client.send({"type": "hello", "name": "ann", "id": "h"})
        refusal = client.expect(type="error", ref="h")
        assert refusal["code"] == "unavailable", refusal
        assert time.monotonic() - sent < COMMAND_TIMEOUT + 3
        assert a.running
    finally:
        redis_server.thaw()
    deadline = time.monotonic() + RECV_TIMEOUT
    while True:  # the node connects to Redis again first
        client.send({"type": "hello", "name": "ann", "id": "h"})
        reply = client.recv_until(lambda frame: frame["type"] in ("welcome", "error"))[0]
        if reply["type"] == "welcome":
            break
        assert reply["code"] == "unavailable" and time.monotonic() < deadline, reply
        time.sleep(0.05)


def test_the_api_lists_rooms_made_on_the_other_node_a_page_at_a_time(nodes, clients):
    a, b = nodes
    ann = connect(clients, a, "ann")
    for room in ("made-on-a-1", "made-on-a-2"):
        ann.join(room)
    first = call(b, "GET", "/api/rooms?limit=1")
    assert first == {"rooms": [{"room": "made-on-a-1", "loaded": False}], "next": "made-on-a-1"}
    second = call(b, "GET", "/api/rooms?limit=1&after=made-on-a-1")
    assert second == {"rooms": [{"room": "made-on-a-2", "loaded": False}], "next": None}


def test_room_and_user_details_from_b_list_who_is_on_a(nodes, clients):
    a, b = nodes
    connect(clients, a, "ann", name="Ann").join(ROOM)
    details = call(b, "GET", f"/api/rooms/{ROOM}")
    assert details["members"] == [{"user": "ann", "name": "Ann", "sessions": 0}]
    connect(clients, b, "bob", name="Bob").join(ROOM)
    members = call(b, "GET", f"/api/rooms/{ROOM}")["members"]
    assert sorted(members, key=lambda m: m["user"]) == [
        {"user": "ann", "name": "Ann", "sessions": 0},
        {"user": "bob", "name": "Bob", "sessions": 1},
    ]
    user = call(b, "GET", "/api/users/ann")
    assert (user["online"], user["sessions"]) == (True, 1)
    assert (user["names"], user["rooms"]) == (["Ann"], [ROOM])  # held by node a
    assert call(b, "GET", "/api/users/nobody")["online"] is False


def test_an_api_disconnect_on_b_closes_the_user_s_sessions_on_a(nodes, clients):
    a, b = nodes
    on_a, on_b = connect(clients, a, "ann"), connect(clients, b, "ann")
    bystander = connect(clients, a, "bob")
    body = {"user": "ann", "code": 4321, "reason": "asked by the shop"}
    assert call(b, "POST", "/api/disconnect", body) == {
        "user": "ann",
        "closed": 2,
        "revoked": False,
    }
    assert on_a.expect_closed() == (4321, "asked by the shop")
    assert on_b.expect_closed() == (4321, "asked by the shop")
    bystander.join(ROOM)  # still connected


def test_an_api_room_close_on_b_lets_the_room_s_sessions_on_a_go(nodes, clients):
    a, b = nodes
    ann, cat = connect(clients, a, "ann"), connect(clients, b, "cat")
    ann.join(ROOM)
    cat.join(ROOM, own_presence=False)
    outsider = connect(clients, a, "bob")  # in no room: untouched
    assert call(b, "POST", f"/api/rooms/{ROOM}/close") == {"room": ROOM, "closed": 2}
    left, _ = ann.recv_until(lambda f: f["type"] == "left")
    assert (left["room"], left["ref"]) == (ROOM, None)
    cat.recv_until(lambda f: f["type"] == "left")
    ann.send({"type": "say", "room": ROOM, "text": "still in?", "id": "s1"})
    assert ann.recv_until(lambda f: f.get("ref") == "s1")[0]["code"] == "not_joined"
    # The room can be joined again. The sessions' leave events travel through Redis and may
    # still be on their way: they come after `joined`, in order, before the joiner's own.
    joined = outsider.join(ROOM, own_presence=False)
    own, before = outsider.recv_until(lambda f: f["type"] == "presence" and f["user"] == "bob")
    assert [f["event"] for f in before] == ["leave"] * len(before), before
    seqs = [f["seq"] for f in [*before, own]]
    assert seqs == list(range(joined["seq"] + 1, own["seq"] + 1)), (joined, before, own)
    assert own["event"] == "join"
