"""The support desk (docs/protocol.md, "Support desk"): the customer's page (/support), the
agents' page (/agent), and the privacy of conversation rooms, in the browser and on the wire."""

from __future__ import annotations

import json
import secrets
import time

import pytest
from browser_helpers import conversation, screenshot, send, sign_in

from chatd.auth import mint_token
from chatd.config import load_config

SUPPORT = {"support": {"enabled": "yes", "trial_agents": "agent1 agent2"}}


@pytest.fixture
def desk(make_daemon):
    return make_daemon(**SUPPORT)


def queue_item(tab, customer: str):
    return tab.page.locator(".queue-item", has_text=customer)


def test_a_customer_and_two_agents_hold_a_conversation_with_a_live_queue(desk, new_tab, expect):
    agent1 = new_tab(desk.http_url("ws", "/agent"))
    sign_in(agent1, "agent1")
    expect(agent1.page.get_by_text("No conversations yet.")).to_be_visible()

    # The customer arrives: a visitor who has not written yet is not in the queue.
    alice = new_tab(desk.http_url("ws", "/support"))
    sign_in(alice, "alice")
    expect(alice.page.locator("#banner")).to_contain_text("You are in the queue")
    expect(agent1.page.get_by_text("No conversations yet.")).to_be_visible()
    item = queue_item(agent1, "alice")
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


@pytest.fixture
def token_desk(make_daemon, tmp_path):
    """A desk with token sign-in (HS256); returns (daemon, token(sub, name, roles, ttl))."""
    key = tmp_path / "hs256.key"
    key.write_text(secrets.token_hex(32))
    daemon = make_daemon(
        auth={"mode": "token", "secret_file": key, "leeway": "0s"},
        support={"enabled": "yes", "resolved_ttl": "1s"},
    )
    auth = load_config(daemon.config).auth

    def token(sub: str, name: str, roles=(), ttl: float = 600) -> str:
        return mint_token(auth, sub, roles=list(roles), ttl=ttl, now=time.time(), name=name)

    return daemon, token


def sign_in_with_token(tab, token: str) -> None:
    """As an operator's sign-in page would: the token in sessionStorage, then the page."""
    tab.page.evaluate("token => sessionStorage.setItem('chatd.token', token)", token)
    tab.page.reload()
    tab.page.locator("#status[data-state=online]").wait_for()


def test_the_desk_shows_display_names_from_the_tokens(token_desk, new_tab, expect):
    """Names come from the tokens' `name` claim; ids (u-4711, a-7) only tell people apart."""
    desk, token = token_desk
    customer = new_tab(desk.http_url("ws", "/support"))
    sign_in_with_token(customer, token("u-4711", "Alice Liddell"))
    expect(customer.page.locator("#me")).to_have_text("Alice Liddell")
    agent = new_tab(desk.http_url("ws", "/agent"))
    sign_in_with_token(agent, token("a-7", "Bob Agent", roles=["agent"]))
    expect(agent.page.locator("#me")).to_have_text("Bob Agent")

    send(customer, "Hello, my order #1234 has not arrived.", "Message to support")
    item = queue_item(agent, "Alice Liddell")
    expect(item.locator(".customer")).to_have_text("Alice Liddell")
    expect(item.locator(".customer")).to_have_attribute("title", "u-4711")
    expect(item.locator(".last")).to_have_text(
        "Alice Liddell: Hello, my order #1234 has not arrived."
    )

    item.click()
    expect(agent.page.locator("#room-title")).to_have_text("Alice Liddell")
    expect(agent.page.locator(".message .from")).to_have_text(["Alice Liddell"])
    expect(item.locator(".agents")).to_have_text("With Bob Agent")
    send(agent, "On it!", "Reply")
    expect(customer.page.locator("#banner")).to_have_text(
        "Support agent Bob Agent is here to help."
    )
    expect(customer.page.locator(".event.presence .presence-text")).to_have_text(
        ["Support agent Bob Agent joined the conversation"]
    )
    expect(customer.page.locator(".message:not(.unsent) .from")).to_have_text(
        ["Alice Liddell", "Bob Agent"]
    )


def test_a_resolved_conversation_leaves_the_queue_and_comes_back_when_the_customer_writes(
    token_desk, new_tab, expect
):
    desk, token = token_desk  # [support] resolved_ttl = 1s
    customer = new_tab(desk.http_url("ws", "/support"))
    sign_in_with_token(customer, token("u-4711", "Alice Liddell"))
    agent = new_tab(desk.http_url("ws", "/agent"))
    sign_in_with_token(agent, token("a-7", "Bob Agent", roles=["agent"]))
    send(customer, "Where is my parcel?", "Message to support")
    item = queue_item(agent, "Alice Liddell")
    item.click()
    send(agent, "Delivered this morning, in your letterbox.", "Reply")

    # Resolved: the customer is told, and the entry stays listed as resolved, for now.
    agent.page.get_by_role("button", name="Resolve", exact=True).click()
    expect(customer.page.locator(".event.status")).to_contain_text(
        "Bob Agent marked your conversation as resolved."
    )
    expect(item.locator(".pill")).to_have_text("Resolved")
    expect(item).to_have_attribute("data-status", "resolved")
    expect(agent.page.get_by_role("button", name="Resolve", exact=True)).to_be_hidden()
    expect(agent.page.locator(".event.status .presence-text")).to_have_text(
        ["Bob Agent marked the conversation as resolved"]
    )

    # After resolved_ttl the next load of the queue (here, a reload of the page) leaves it out.
    time.sleep(1.2)
    agent.page.reload()
    agent.page.locator("#status[data-state=online]").wait_for()
    expect(agent.page.get_by_text("No conversations yet.")).to_be_visible()
    expect(agent.page.locator(".queue-item")).to_have_count(0)

    # The customer writes again: open again, waiting, back in the queue at once.
    send(customer, "Found it, but the box is damaged.", "Message to support")
    item = queue_item(agent, "Alice Liddell")
    expect(item.locator(".pill")).to_have_text("Waiting just now")
    expect(item.locator(".last")).to_have_text("Alice Liddell: Found it, but the box is damaged.")
    statuses = [
        line["status"] for line in desk.transcript("support-u-4711") if line["type"] == "status"
    ]
    assert statuses == ["resolved"]
    # The status filter asks the server again: open only, then resolved only.
    agent.page.get_by_label("Show").select_option("open")
    expect(agent.page.locator(".queue-item .customer")).to_have_text(["Alice Liddell"])
    agent.page.get_by_label("Show").select_option("resolved")
    expect(agent.page.get_by_text("No resolved conversations.")).to_be_visible()


def test_a_fresh_token_in_session_storage_keeps_the_session_past_the_old_ones_expiry(
    token_desk, new_tab, expect
):
    """login.js looks at sessionStorage["chatd.token"] every few seconds and sends a new token
    there in a `refresh`: the server does not close the session (4001) when the first expires."""
    desk, token = token_desk  # [auth] leeway = 0s
    customer = new_tab("about:blank")
    frames: list[dict] = []
    closes: list = []

    def watch(socket):
        socket.on("framereceived", lambda payload: frames.append(json.loads(payload)))
        socket.on("close", lambda _socket: closes.append(socket.url))

    customer.page.on("websocket", watch)
    customer.page.goto(desk.http_url("ws", "/support"))
    expires = time.time() + 8
    sign_in_with_token(customer, token("u-4711", "Alice Liddell", ttl=8))
    customer.page.evaluate(
        "token => sessionStorage.setItem('chatd.token', token)",
        token("u-4711", "Alice Liddell", ttl=600),
    )
    deadline = time.time() + 10
    while not any(frame["type"] == "refreshed" for frame in frames) and time.time() < deadline:
        customer.page.wait_for_timeout(200)
    assert any(frame["type"] == "refreshed" for frame in frames), frames
    customer.page.wait_for_timeout(max(0, expires + 1.5 - time.time()) * 1000)
    send(customer, "still connected?", "Message to support")
    expect(conversation(customer)).to_have_text(["still connected?"])
    expect(customer.page.locator("#status")).to_have_attribute("data-state", "online")
    assert closes == [], "the socket was closed (and reopened)"


def test_the_queue_pages_with_load_more(desk, new_tab, clients, expect):
    """The page asks for 50 conversations; with `more`, "Load more" asks for the rest, with
    the status and assignment filters both."""
    for number in range(52):
        customer = clients(desk.url("ws"))
        room = customer.hello(f"c{number:02}")["support_room"]
        customer.join(room)
        customer.say(room, f"question {number}", "q")
        customer.close()
    other_agent = clients(desk.url("ws"))
    other_agent.hello("agent2")
    other_agent.send({"type": "assign", "room": "support-c00", "id": "a-1"})
    other_agent.expect(type="ack", id="a-1")
    agent = new_tab(desk.http_url("ws", "/agent"))
    sign_in(agent, "agent1")
    items = agent.page.locator(".queue-item")
    expect(items).to_have_count(50)
    expect(agent.page.locator("#queue-count")).to_have_text("(50 waiting)")
    agent.page.get_by_role("button", name="Load more").click()
    expect(items).to_have_count(52)
    expect(agent.page.get_by_role("button", name="Load more")).to_be_hidden()
    # Longest waiting first, across both pages.
    first, last = items.first.locator(".customer"), items.last.locator(".customer")
    expect(first).to_have_text("c00")
    expect(last).to_have_text("c51")
    # Open and unassigned: c00 (agent2's) is left out, on both pages.
    agent.page.get_by_label("Show").select_option("open")
    agent.page.get_by_label("Assigned").select_option("unassigned")
    expect(first).to_have_text("c01")
    expect(items).to_have_count(50)
    agent.page.get_by_role("button", name="Load more").click()
    expect(items).to_have_count(51)
    expect(last).to_have_text("c51")
    expect(agent.page.get_by_role("button", name="Load more")).to_be_hidden()


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
    """The chat page cannot open someone's support room (nor, with the desk on, a public room:
    customers keep to their own conversation); the agents' page needs an agent."""
    mallory = new_tab(desk.http_url("ws", "/"))
    sign_in(mallory, "mallory")
    expect(mallory.page.get_by_role("alert").filter(has_text="Cannot join")).to_contain_text(
        "Cannot join #lobby"
    )
    mallory.page.get_by_label("Join a room").fill("support-alice")
    mallory.page.get_by_label("Join a room").press("Enter")
    expect(mallory.page.get_by_role("alert").filter(has_text="Cannot join")).to_contain_text(
        "Cannot join #support-alice: you may not"
    )
    expect(mallory.page.locator("#room-list .room-name")).to_have_count(0)

    eve = new_tab(desk.http_url("ws", "/agent"))
    sign_in(eve, "eve")
    expect(eve.page.get_by_role("alert").filter(has_text="support agents")).to_contain_text(
        "This page is for support agents. The server said: only support agents"
    )
