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
