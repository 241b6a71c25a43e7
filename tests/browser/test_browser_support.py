"""The support desk (docs/protocol.md, "Support desk"): the customer's page (/support), the
agents' page (/agent), and the privacy of conversation rooms, in the browser and on the wire."""

from __future__ import annotations

import pytest
from browser_helpers import screenshot, sign_in

SUPPORT = {"support": {"enabled": "yes", "trial_agents": "agent1 agent2"}}


@pytest.fixture
def desk(make_daemon):
    return make_daemon(**SUPPORT)


def send(tab, text: str, label: str) -> None:
    box = tab.page.get_by_label(label, exact=True)
    box.fill(text)
    box.press("Enter")


def conversation(tab):
    """The texts of the acknowledged messages in the conversation shown."""
    return tab.page.locator(".events:not(.pending) .message .text")


def queue_item(tab, customer: str):
    return tab.page.locator(".queue-item", has_text=customer)


def test_a_customer_and_two_agents_hold_a_conversation_with_a_live_queue(desk, new_tab, expect):
    agent1 = new_tab(desk.http_url("ws", "/agent"))
    sign_in(agent1, "agent1")
    expect(agent1.page.get_by_text("No conversations yet.")).to_be_visible()

    # The customer arrives: the queue shows the conversation at once, as new.
    alice = new_tab(desk.http_url("ws", "/support"))
    sign_in(alice, "alice")
    expect(alice.page.locator("#banner")).to_contain_text("You are in the queue")
    item = queue_item(agent1, "alice")
    expect(item.locator(".pill")).to_have_text("New")

    send(alice, "Hello, my order #1234 has not arrived.", "Message to support")
    expect(item.locator(".pill")).to_have_text("Waiting just now")
    expect(item.locator(".last")).to_have_text("alice: Hello, my order #1234 has not arrived.")
    expect(agent1.page.locator("#queue-count")).to_have_text("(1 waiting)")

    # agent1 opens it: the history is there, and the customer is told an agent joined.
    item.click()
    expect(agent1.page.locator("#room-title")).to_have_text("alice")
    expect(conversation(agent1)).to_have_text(["Hello, my order #1234 has not arrived."])
    expect(alice.page.locator("#banner")).to_have_text("Support agent agent1 is here to help.")
    expect(alice.page.locator(".event.presence .presence-text")).to_have_text(
        ["Support agent agent1 joined the conversation"]
    )
    expect(item.locator(".agents")).to_have_text("With agent1")

    send(agent1, "Sorry about that! Let me look it up.", "Reply")
    expect(conversation(alice)).to_have_text(
        ["Hello, my order #1234 has not arrived.", "Sorry about that! Let me look it up."]
    )
    expect(item.locator(".pill")).to_have_text("Answered")

    # A second agent sees the queue and the whole conversation, and the replies of each
    # agent reach the other and the customer.
    agent2 = new_tab(desk.http_url("ws", "/agent"))
    sign_in(agent2, "agent2")
    queue_item(agent2, "alice").click()
    expect(conversation(agent2)).to_have_text(
        ["Hello, my order #1234 has not arrived.", "Sorry about that! Let me look it up."]
    )
    send(agent2, "It left our warehouse this morning; you will have it tomorrow.", "Reply")
    send(alice, "Great, thank you both!", "Message to support")
    expected = [
        "Hello, my order #1234 has not arrived.",
        "Sorry about that! Let me look it up.",
        "It left our warehouse this morning; you will have it tomorrow.",
        "Great, thank you both!",
    ]
    for tab in (alice, agent1, agent2):
        expect(conversation(tab)).to_have_text(expected)
    expect(alice.page.locator("#banner")).to_have_text(
        "Support agents agent1 and agent2 are here to help."
    )
    # The customer wrote last: waiting again, in both agents' queues.
    for tab in (agent1, agent2):
        expect(queue_item(tab, "alice").locator(".pill")).to_have_text("Waiting just now")
        expect(queue_item(tab, "alice").locator(".agents")).to_have_text("With agent1, agent2")

    # A second customer queues up behind: waiting conversations come first, oldest first.
    bob = new_tab(desk.http_url("ws", "/support"))
    sign_in(bob, "bob")
    send(bob, "Can I change my delivery address?", "Message to support")
    expect(agent1.page.locator(".queue-item .customer")).to_have_text(["alice", "bob"])
    screenshot(agent1, "agent")
    screenshot(alice, "support")


def test_a_customer_cannot_join_another_customers_room(desk, clients):
    """On the wire: the room, its members and its history are the customer's and agents'."""
    alice = clients(desk.url("ws"))
    assert alice.hello("alice")["support_room"] == "support-alice"
    alice.join("support-alice")
    alice.say("support-alice", "my card number is ...", "a1")

    mallory = clients(desk.url("ws"))
    assert mallory.hello("mallory")["support_room"] == "support-mallory"
    for number, frame in enumerate(
        [
            {"type": "join", "room": "support-alice"},
            {"type": "join", "room": "support-alice", "since": {"epoch": "0", "seq": 0}},
            {"type": "who", "room": "support-alice"},
            {"type": "history", "room": "support-alice"},
            {"type": "queue"},
            {"type": "say", "room": "support-alice", "text": "hi", "id": "m1"},
        ]
    ):
        ref = f"r{number}"
        mallory.send({**frame, "id": ref} if frame["type"] != "say" else frame)
        error = mallory.expect(type="error")
        expected = "not_joined" if frame["type"] == "say" else "forbidden"
        assert error["code"] == expected, (frame, error)
    # alice's room went on without mallory: mallory is not a member, and the next frame
    # mallory gets is the answer to its own join (nothing of alice's room came in between).
    alice.say("support-alice", "still private?", "a2")
    alice.send({"type": "who", "room": "support-alice"})
    assert alice.expect(type="members", room="support-alice")["members"] == ["alice"]
    mallory.send({"type": "join", "room": "support-mallory"})
    own = mallory.expect(type="joined", room="support-mallory")
    assert own["members"] == ["mallory"] and own["history"] == []
    assert {line.get("from", line.get("user")) for line in desk.transcript("support-alice")} == {
        "alice"
    }


def test_the_pages_say_in_words_what_the_desk_refuses(desk, new_tab, expect):
    """The chat page cannot open someone's support room; the agents' page needs an agent."""
    mallory = new_tab(desk.http_url("ws", "/"))
    sign_in(mallory, "mallory")
    mallory.page.get_by_label("Join a room").fill("support-alice")
    mallory.page.get_by_label("Join a room").press("Enter")
    expect(mallory.page.get_by_role("alert").filter(has_text="Cannot join")).to_contain_text(
        "Cannot join #support-alice: you may not"
    )
    expect(mallory.page.locator("#room-list .room-name")).to_have_text(["#lobby"])

    eve = new_tab(desk.http_url("ws", "/agent"))
    sign_in(eve, "eve")
    expect(eve.page.get_by_role("alert").filter(has_text="support agents")).to_contain_text(
        "This page is for support agents. The server said: only support agents"
    )
