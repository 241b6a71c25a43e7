"""The desk's assignment and availability against a real daemon, with `websockets` clients:
concurrent claims, round-robin auto-assignment within capacity, what customers are told about
agents being online, and assignments that survive a restart."""

from __future__ import annotations

from chatd_harness import RECV_TIMEOUT
from desk_clients import agent, claim_race, customer_writes, queue

AGENTS = ("ag1", "ag2", "ag3")
DESK = {"enabled": "yes", "trial_agents": " ".join(AGENTS)}


def test_two_agents_claiming_at_once_one_wins_the_other_gets_conflict(make_daemon, clients):
    daemon = make_daemon(support=DESK)
    _customer, room = customer_writes(clients, daemon, "alice")
    first, second = agent(clients, daemon, "ag1"), agent(clients, daemon, "ag2")
    for round_ in range(5):  # sent back to back, on two connections
        claim_race(first, second, room, round_)
    assignments = [e for e in daemon.transcript(room) if e["type"] == "assignment"]
    assert [e["assignee"] is None for e in assignments] == [False, True] * 5


def test_round_robin_spreads_20_conversations_over_3_agents_within_capacity(make_daemon, clients):
    daemon = make_daemon(
        support={**DESK, "auto_assign": "round_robin", "max_open_per_agent": 7},
        limits={"max_connections_per_ip": 100},
    )
    agents = [agent(clients, daemon, name) for name in AGENTS]
    rooms = [customer_writes(clients, daemon, f"cust{n}")[1] for n in range(20)]
    entries = queue(agents[0], limit=50)["conversations"]
    assert sorted(entry["room"] for entry in entries) == sorted(rooms)
    load: dict[str, int] = {}
    for entry in entries:
        load[entry["assignee"]] = load.get(entry["assignee"], 0) + 1
    assert load == {"ag1": 7, "ag2": 7, "ag3": 6}
    assert queue(agents[2], view="mine")["total"] == 6
    assert queue(agents[2], view="unassigned")["total"] == 0
    # every assignment is in its conversation's transcript, made by the server
    for room in rooms:
        [assigned] = [e for e in daemon.transcript(room) if e["type"] == "assignment"]
        assert assigned["auto"] is True and "from" not in assigned


def test_customers_are_told_whether_an_agent_is_online(make_daemon, clients):
    daemon = make_daemon(support=DESK)
    customer = clients(daemon.url("ws"))
    assert customer.hello("alice")["agents_online"] is False
    staff = agent(clients, daemon, "ag1")
    assert customer.recv(RECV_TIMEOUT) == {"type": "agents", "online": True}
    staff.send({"type": "availability", "status": "away", "id": "v"})
    assert staff.expect(type="availability", ref="v")["status"] == "away"
    assert customer.recv(RECV_TIMEOUT) == {"type": "agents", "online": False}
    # nobody online: the customer still writes, and the message is in the queue
    room = "support-alice"
    customer.join(room)
    customer.say(room, "anyone there?", "m-1")
    [entry] = queue(staff)["conversations"]
    assert entry["last"]["text"] == "anyone there?"


def test_an_assignment_survives_a_restart(make_daemon, clients):
    daemon = make_daemon(support=DESK)
    _customer, room = customer_writes(clients, daemon, "alice")
    staff = agent(clients, daemon, "ag1")
    staff.send({"type": "assign", "room": room, "id": "a"})
    staff.expect(type="ack", id="a")
    daemon.restart()
    again = agent(clients, daemon, "ag2")
    [entry] = queue(again)["conversations"]
    assert (entry["room"], entry["assignee"]) == (room, "ag1")
