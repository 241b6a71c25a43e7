"""What the desk's e2e tests do as customers and agents (websockets clients of
chatd_harness), importable by them (a conftest is not)."""

from __future__ import annotations


def customer_writes(clients, daemon, name: str, text: str = "help"):
    """A customer says hello, joins their conversation and writes in it; (client, room)."""
    client = clients(daemon.url("ws"))
    room = client.hello(name)["support_room"]
    client.join(room)
    client.say(room, text, f"{name}-1")
    return client, room


def agent(clients, daemon, name: str):
    """A welcomed agent (the name is one of `[support] trial_agents`)."""
    client = clients(daemon.url("ws"))
    assert "agent" in client.hello(name)["roles"]
    return client


def queue(client, **request) -> dict:
    """A page of the queue (the `conversation` and `agent` updates before it are skipped)."""
    client.send({"type": "queue", "id": "q", **request})
    frame, _ = client.recv_until(lambda f: f.get("type") == "queue" and f.get("ref") == "q")
    return frame


def claim_race(first, second, room: str, round_: int) -> None:
    """Both agents claim the conversation back to back: exactly one gets its ack, the other
    `conflict`; the winner then gives it back to nobody (and has the ack of that)."""
    first.send({"type": "assign", "room": room, "id": f"a-{round_}"})
    second.send({"type": "assign", "room": room, "id": f"b-{round_}"})
    outcomes = []
    for client, ref in ((first, f"a-{round_}"), (second, f"b-{round_}")):
        reply, _ = client.recv_until(lambda f, ref=ref: f.get("ref") == ref or f.get("id") == ref)
        outcomes.append(reply["type"] if reply["type"] == "ack" else reply["code"])
    assert sorted(outcomes) == ["ack", "conflict"], outcomes
    holder = first if outcomes[0] == "ack" else second
    holder.send({"type": "transfer", "room": room, "agent": None, "id": f"t-{round_}"})
    holder.recv_until(lambda f: f.get("type") == "ack" and f["id"] == f"t-{round_}")
