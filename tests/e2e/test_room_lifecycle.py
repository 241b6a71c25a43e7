"""Rooms come and go, against a real daemon: rooms leave memory when idle and come back from
their transcripts, `max_rooms` bounds memory without refusing anyone, one user cannot create
rooms without end, and rooms where nothing was said leave no transcript behind."""

from __future__ import annotations

import json
import time

from chatd_harness import wait_for

CUSTOMERS = 500


def health(daemon) -> dict:
    return json.loads(daemon.get("ws", "/healthz")[2])


def test_500_customers_one_after_another_with_max_rooms_20(make_daemon, clients):
    daemon = make_daemon(
        rooms={"max_rooms": 20},
        support={"enabled": "yes", "trial_agents": "agent"},
    )
    url = daemon.url("ws")
    started = time.monotonic()
    said = {}
    for number in range(CUSTOMERS):
        # Plain ids and ids with upper case and dots (base32 room names), alternately.
        name = f"cust{number}" if number % 2 else f"Cust.{number}"
        customer = clients(url)
        room = customer.hello(name)["support_room"]
        customer.join(room)
        message, _ack = customer.say(room, f"help me, I am customer {number}", "c-1")
        said[room] = message
        customer.close()
    elapsed = time.monotonic() - started
    print(f"{CUSTOMERS} customers in {elapsed:.1f}s")
    assert len(said) == CUSTOMERS  # every customer had a room of their own
    assert health(daemon)["rooms"] <= 20

    # Every conversation is in the agent's queue (paged), with its customer's message.
    agent = clients(url)
    agent.hello("agent")
    entries, cursor = [], None
    for _page in range(4):
        frame = {"type": "queue", "limit": 200, **({"before": cursor} if cursor else {})}
        agent.send(frame)
        page = agent.expect(type="queue")
        entries.extend(page["conversations"])
        cursor = page["next"]
        if not page["more"]:
            break
    assert sorted(entry["room"] for entry in entries) == sorted(said)
    for entry in entries:
        assert entry["status"] == "open"
        assert entry["last"]["text"] == said[entry["room"]]["text"]

    # The first customer comes back: the room was unloaded long ago, and is loaded again with
    # its epoch, seq and history.
    first = clients(url)
    room = first.hello("Cust.0")["support_room"]
    joined = first.join(room)
    old = said[room]
    assert (joined["epoch"], joined["seq"]) == (old["epoch"], old["seq"] + 1)  # and the leave
    assert old in joined["history"]


def test_one_user_is_stopped_at_the_room_budget(make_daemon, clients):
    daemon = make_daemon(rooms={"creations_per_user": 25, "idle_unload": "1s"})
    url = daemon.url("ws")
    greedy = clients(url)
    greedy.hello("greedy")
    rooms = [f"r{number:04}" for number in range(1000)]
    for number, room in enumerate(rooms):
        greedy.send({"type": "join", "room": room, "id": f"j-{number}"})
    joined, refused, presence = [], [], []
    while len(joined) + len(refused) < len(rooms) or len(presence) < len(joined):
        frame = greedy.recv()
        if frame["type"] == "joined":
            joined.append(frame["room"])
        elif frame["type"] == "error":
            assert frame["code"] == "room_budget", frame
            refused.append(frame["ref"])
        else:
            assert (frame["type"], frame["event"]) == ("presence", "join"), frame
            presence.append(frame["room"])
    assert joined == presence == rooms[:25]
    assert refused == [f"j-{number}" for number in range(25, 1000)]
    # No transcript for any refused room; one (with a presence line) for each created one.
    files = sorted(path.name for path in daemon.transcripts.glob("*.jsonl"))
    assert files == [f"{room}.jsonl" for room in rooms[:25]]

    # Somebody says something in another room.
    talker = clients(url)
    talker.hello("talker")
    epoch = talker.join("keep")["epoch"]
    message, _ack = talker.say("keep", "this room saw a message", "t-1")
    talker.close()
    greedy.close()

    # Once idle for idle_unload, the rooms leave memory; those that only saw presence leave no
    # transcript either.
    wait_for(lambda: health(daemon)["rooms"] == 0, 10, "every room to unload")
    files = sorted(path.name for path in daemon.transcripts.glob("*.jsonl"))
    assert files == ["keep.jsonl"]

    # The budget is the user's, not the connection's.
    again = clients(url)
    again.hello("greedy")
    again.send({"type": "join", "room": "r0000", "id": "j-again"})
    assert again.expect(type="error", ref="j-again")["code"] == "room_budget"
    # Joining a room that exists costs nothing: `keep` is loaded again, as it was.
    joined = again.join("keep")
    assert (joined["epoch"], joined["seq"]) == (epoch, message["seq"] + 1)
    assert message in joined["history"]
