"""The support desk against a real daemon: every customer has a conversation of their own,
however alike two ids look, customers stay out of public rooms, and the agents' queue holds
only conversations in which the customer wrote, with a status that survives a restart."""

from __future__ import annotations

import threading

import pytest
from chatd_harness import RECV_TIMEOUT, mint_token

SECRET = b"a-test-secret-of-at-least-32-bytes-long!"
DESK = {"enabled": "yes", "trial_agents": "agent"}


def join_error(client, room: str) -> str:
    client.send({"type": "join", "room": room, "id": "j-x"})
    return client.expect(type="error", ref="j-x")["code"]


def test_a_dot_b_and_a_underscore_b_get_different_conversations(make_daemon, clients):
    daemon = make_daemon(support=DESK)
    dotted, underscored = clients(daemon.url("ws")), clients(daemon.url("wss"))
    dotted_room = dotted.hello("a.b")["support_room"]
    # Before a_b ever came, a.b may not take a_b's room (docs/protocol.md gives its name).
    assert join_error(dotted, "support-_mfpwe") == "forbidden"
    underscored_room = underscored.hello("a_b")["support_room"]
    assert underscored_room == "support-_mfpwe"
    assert dotted_room != underscored_room
    dotted.join(dotted_room)
    underscored.join(underscored_room)
    assert join_error(dotted, underscored_room) == "forbidden"
    assert join_error(underscored, dotted_room) == "forbidden"
    message, _ack = dotted.say(dotted_room, "only for a.b", "d-1")
    reply, _ack = underscored.say(underscored_room, "only for a_b", "u-1")
    assert message["seq"] == reply["seq"] == 2  # each room's own sequence


@pytest.mark.parametrize(
    ("pattern", "rounds"),
    [(("u{}.x", "u{}_x"), 15), (("User{}", "user{}"), 15), (("A.b{}", "a_B{}"), 5)],
    ids=["dot-underscore", "case", "both"],
)
def test_lookalike_customers_joining_at_once_never_share_a_room(
    make_daemon, clients, tmp_path, pattern, rounds
):
    """Token mode (subs are compared exactly): ids that differ only by '.'/'_' or by case are
    two customers. Both connect and join at the same moment, 15 times over."""
    secret = tmp_path / "jwt-secret"
    secret.write_bytes(SECRET)
    daemon = make_daemon(auth={"mode": "token", "secret_file": secret}, support={"enabled": "yes"})
    opening = threading.Lock()  # the clients fixture's list is not for threads

    def customer(token, barrier, index, rooms, seen, failures):
        try:
            barrier.wait(RECV_TIMEOUT)  # both connect at the same moment ...
            with opening:
                client = clients(daemon.url("ws"))
            room = rooms[index] = client.hello_token(token)["support_room"]
            barrier.wait(RECV_TIMEOUT)  # ... and join at the same moment
            joined = client.join(room)
            assert joined["members"] == [client.name], joined
            client.say(room, f"private to {client.name}", "c-1")
            barrier.wait(RECV_TIMEOUT)  # both have said and been acked
            client.send({"type": "who", "room": room, "id": "w"})
            members, _before = client.recv_until(lambda frame: frame["type"] == "members")
            assert members["members"] == [client.name], members
            seen[index] = [
                (frame["from"], frame["text"])
                for frame in client.received
                if frame["type"] == "message"
            ]
        except BaseException as error:  # re-raised by the test's thread
            failures.append(error)
            barrier.abort()

    for attempt in range(rounds):
        subs = [template.format(attempt) for template in pattern]
        tokens = [mint_token(daemon.config, sub) for sub in subs]
        barrier = threading.Barrier(2)
        rooms, seen, failures = [None, None], [None, None], []
        threads = [
            threading.Thread(target=customer, args=(tokens[i], barrier, i, rooms, seen, failures))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(3 * RECV_TIMEOUT)
        if failures:
            raise failures[0]
        assert rooms[0] != rooms[1], (subs, rooms)
        for index, sub in enumerate(subs):
            assert seen[index] == [(sub, f"private to {sub}")], (subs, seen)
            users = {e.get("from", e.get("user")) for e in daemon.transcript(rooms[index])}
            assert users == {sub}, (subs, rooms)


def test_customers_stay_out_of_public_rooms_unless_allowed(make_daemon, clients):
    closed = make_daemon(support=DESK)
    agent, customer = clients(closed.url("ws")), clients(closed.url("ws"))
    agent.hello("agent")
    agent.join("lobby")  # agents may create and join public rooms
    customer.hello("carol")
    for room in ("lobby", "brand-new"):
        assert join_error(customer, room) == "forbidden"
        customer.send({"type": "who", "room": room, "id": "w-x"})
        assert customer.expect(type="error", ref="w-x")["code"] == "forbidden"
    assert not (closed.transcripts / "brand-new.jsonl").exists()

    public = make_daemon(support=DESK | {"customers_join_public": "yes"})
    agent, customer = clients(public.url("ws")), clients(public.url("ws"))
    agent.hello("agent")
    agent.join("lobby")
    customer.hello("carol")
    customer.join("lobby")
    assert agent.next_event()["user"] == "carol"
    message, _ack = customer.say("lobby", "hello from a customer", "c-1")
    assert agent.next_event() == message
    # Still not someone else's conversation.
    assert join_error(customer, "support-dave") == "forbidden"


def queue(agent, **fields) -> list[dict]:
    agent.send({"type": "queue", "id": "q", **fields})
    reply, _before = agent.recv_until(lambda frame: frame["type"] == "queue")
    assert reply["more"] is False, reply
    return reply["conversations"]


def test_queue_status_resolve_reopen_and_restart(make_daemon, clients):
    daemon = make_daemon(support=DESK)
    url = daemon.url("ws")
    agent = clients(url)
    agent.hello("agent")
    assert queue(agent) == []

    visitor, carol, dave = clients(url), clients(url), clients(url)
    visitor.join(visitor.hello("visitor")["support_room"])  # opens the page, never writes
    rooms = {}
    for customer, text in ((carol, "my order is late"), (dave, "refund please")):
        room = rooms[customer] = customer.hello("carol" if customer is carol else "dave")[
            "support_room"
        ]
        customer.join(room)
        customer.say(room, text, "c-1")
        update, _before = agent.recv_until(lambda frame: frame["type"] == "conversation")
        assert (update["room"], update["status"]) == (room, "open")
    entries = queue(agent)
    assert sorted((e["room"], e["status"]) for e in entries) == [
        ("support-carol", "open"),
        ("support-dave", "open"),
    ]

    for customer in (carol, dave):
        agent.send({"type": "resolve", "room": rooms[customer], "id": f"r-{customer.name}"})
        ack, updates = agent.recv_until(lambda frame: frame["type"] == "ack")
        assert ack["id"] == f"r-{customer.name}" and isinstance(ack["seq"], int)
        if not updates:  # the queue update may come before or after the ack
            updates = [agent.expect(type="conversation")]
        assert [(f["room"], f["status"]) for f in updates] == [(rooms[customer], "resolved")]
        status = customer.expect(type="status", room=rooms[customer], seq=ack["seq"])
        assert (status["from"], status["status"]) == ("agent", "resolved")
    assert queue(agent, status="open") == []
    assert {e["room"] for e in queue(agent, status="resolved")} == {"support-carol", "support-dave"}

    # carol writes again: her conversation is open again.
    carol.say(rooms[carol], "it is still late", "c-2")
    update, _before = agent.recv_until(lambda frame: frame["type"] == "conversation")
    assert (update["room"], update["status"]) == ("support-carol", "open")
    before_restart = {e["room"]: e for e in queue(agent)}
    assert {room: e["status"] for room, e in before_restart.items()} == {
        "support-carol": "open",
        "support-dave": "resolved",
    }
    assert before_restart["support-carol"]["last"]["text"] == "it is still late"

    daemon.restart()
    agent = clients(daemon.url("ws"))
    agent.hello("agent")
    after = {e["room"]: e for e in queue(agent)}
    assert {room: e["status"] for room, e in after.items()} == {
        "support-carol": "open",
        "support-dave": "resolved",
    }
    assert after == before_restart
    assert [e["room"] for e in queue(agent, status="open")] == ["support-carol"]
