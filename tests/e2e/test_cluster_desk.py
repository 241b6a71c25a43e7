"""The support desk across nodes (Redis mode): real `twistd -n chatd` nodes on a real
redis-server, `websockets` clients. A conversation begun on one node is in every node's queue;
claims race across nodes and exactly one wins; one node auto-assigns, each conversation once;
customers on one node hear of agents on another, and of their node's death."""

from __future__ import annotations

import time

from chatd_harness import RECV_TIMEOUT, wait_for
from cluster_settings import NODE_LEASE
from desk_clients import agent, claim_race, customer_writes, queue

AGENTS = ("ag1", "ag2")
DESK = {"enabled": "yes", "trial_agents": " ".join(AGENTS)}
MANY = {"max_connections_per_ip": 100}


def desk_node(make_node, name: str, **support):
    return make_node(name, support={**DESK, **support}, limits=MANY)


def events_in(node, room: str, kind: str) -> list[dict]:
    if not node.transcript_path(room).exists():
        return []
    return [event for event in node.transcript(room) if event["type"] == kind]


def test_a_conversation_begun_on_one_node_is_in_every_node_s_queue(make_node, clients):
    a, b = desk_node(make_node, "a"), desk_node(make_node, "b")
    watcher = agent(clients, b, "ag1")
    assert queue(watcher)["total"] == 0  # and now watches the queue

    customer, room = customer_writes(clients, a, "alice", "my order is late")
    pushed, _ = watcher.recv_until(lambda f: f["type"] == "conversation" and f["room"] == room)
    assert (pushed["customer"], pushed["status"]) == ("alice", "open")
    assert pushed["last"]["text"] == "my order is late"
    assert pushed["waiting_since"] is not None

    # The agent answers from node b; the customer on node a reads it, and the queue follows
    # (the watcher's queue updates come in between).
    watcher.send({"type": "join", "room": room})
    watcher.recv_until(lambda f: f["type"] == "joined")
    watcher.send({"type": "say", "room": room, "text": "on its way", "id": "ag1-1"})

    def answered(frame: dict) -> bool:
        return frame["type"] == "conversation" and frame["last"]["text"] == "on its way"

    watcher.recv_until(answered)
    got, _ = customer.recv_until(lambda f: f["type"] == "message" and f["from"] == "ag1")
    assert got["text"] == "on its way"
    assert [f for f in watcher.received if answered(f)][-1]["waiting_since"] is None

    # A node started later builds the same entry from Redis (and the transcripts).
    c = desk_node(make_node, "c")
    late = agent(clients, c, "ag2")

    def entries() -> list[dict] | None:
        listed = queue(late)["conversations"]
        return listed if listed and listed[0]["agents"] else None

    [listed] = wait_for(entries, 10, "the entry, with its agent, in node c's queue", 0.25)
    assert (listed["room"], listed["customer"], listed["last"]["text"]) == (
        room,
        "alice",
        "on its way",
    )
    assert listed["agents"] == ["ag1"]


def test_two_agents_claiming_on_two_nodes_at_once_one_wins(make_node, clients):
    a, b = desk_node(make_node, "a"), desk_node(make_node, "b")
    _customer, room = customer_writes(clients, a, "alice")
    first, second = agent(clients, a, "ag1"), agent(clients, b, "ag2")
    wait_for(lambda: queue(second)["total"] == 1, 10, "the entry in node b's queue", 0.25)
    for round_ in range(5):  # sent back to back, on two nodes
        claim_race(first, second, room, round_)
        # both nodes see it unassigned before the next round
        for client in (first, second):
            wait_for(
                lambda c=client: queue(c)["conversations"][0]["assignee"] is None, 10, "free", 0.25
            )
    wait_for(lambda: len(events_in(a, room, "assignment")) == 10, 15, "the assignments archived")
    assignments = events_in(a, room, "assignment")
    assert [e["assignee"] is None for e in assignments] == [False, True] * 5


def test_one_node_auto_assigns_each_conversation_once(make_node, clients):
    round_robin = {"auto_assign": "round_robin", "max_open_per_agent": 3}
    a, b = desk_node(make_node, "a", **round_robin), desk_node(make_node, "b", **round_robin)
    agents = [agent(clients, a, "ag1"), agent(clients, b, "ag2")]
    rooms = [customer_writes(clients, (a, b)[n % 2], f"cust{n}")[1] for n in range(6)]

    def all_assigned() -> bool:
        entries = queue(agents[1], limit=50)["conversations"]
        return len(entries) == 6 and all(entry["assignee"] for entry in entries)

    # queue requests are rate-limited (20 a second): poll below that
    wait_for(all_assigned, 15, "every conversation assigned", 0.25)
    for client in agents:  # both nodes' queues agree
        entries = queue(client, limit=50)["conversations"]
        load: dict[str, int] = {}
        for entry in entries:
            load[entry["assignee"]] = load.get(entry["assignee"], 0) + 1
        assert sorted(entry["room"] for entry in entries) == sorted(rooms)
        assert load == {"ag1": 3, "ag2": 3}
    for room in rooms:
        wait_for(lambda r=room: events_in(a, r, "assignment"), 15, f"{room}'s assignment")
    time.sleep(1.0)  # any second assignment would have been archived by now
    for room in rooms:
        [assigned] = events_in(a, room, "assignment")
        assert assigned["auto"] is True


def test_customers_hear_of_agents_on_other_nodes_and_of_their_node_s_death(make_node, clients):
    a, b = desk_node(make_node, "a"), desk_node(make_node, "b")
    customer = clients(a.url("ws"))
    assert customer.hello("alice")["agents_online"] is False

    staff = agent(clients, b, "ag1")
    assert customer.recv(RECV_TIMEOUT) == {"type": "agents", "online": True}
    staff.send({"type": "availability", "status": "away", "id": "v"})
    assert staff.expect(type="availability", ref="v")["status"] == "away"
    assert customer.recv(RECV_TIMEOUT) == {"type": "agents", "online": False}
    # what the agent said holds on every node: a second session on node a is away too
    second = agent(clients, a, "ag1")
    assert second.received[-1]["availability"] == "away"
    second.send({"type": "availability", "status": "online", "id": "v2"})
    assert customer.recv(RECV_TIMEOUT) == {"type": "agents", "online": True}
    second.close()

    b.kill()  # the agent's only session left is on node b
    killed = time.monotonic()
    assert customer.recv(NODE_LEASE + 10) == {"type": "agents", "online": False}
    assert time.monotonic() - killed < NODE_LEASE * 4 / 3 + 5
