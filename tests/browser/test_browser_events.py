"""Room events beyond messages and presence (docs/protocol.md, "Events") in Chromium: edits and
deletions change their target, moderation is a line of its own, kinds the page does not know
show nothing (and still count for resuming), and a kick takes the page out of the room."""

from __future__ import annotations

import json

from browser_helpers import sign_in
from chatd_harness import api_call

SUPPORT = {"support": {"enabled": "yes", "trial_agents": "agent1"}}


def messages(tab):
    """The texts of the room's messages (acknowledged ones; not those still being sent)."""
    return tab.page.locator(".events:not(.pending) .message .text")


def shown_items(tab) -> list[str]:
    """The inner text of every item of the room's list, hidden ones included (as ''): a
    kind of event that renders as an empty item shows up here as ''."""
    return tab.page.locator(".events:not(.pending) > li").evaluate_all(
        "items => items.map(item => item.hidden ? '' : item.innerText.trim())"
    )


def acked(client, frame: dict) -> dict:
    """Send a frame with an id and read up to its ack; the ack."""
    client.send(frame)
    ack, _ = client.recv_until(
        lambda f: f["type"] in ("ack", "error") and f.get("ref", f.get("id")) == frame["id"]
    )
    assert ack["type"] == "ack", ack
    return ack


def test_an_edited_and_a_deleted_message_render_as_such_for_another_member(
    make_daemon, new_tab, clients, expect
):
    daemon = make_daemon()
    alice = new_tab(daemon.http_url("ws", "/"))
    sign_in(alice, "alice")
    bob = clients(daemon.url("ws"))
    bob.hello("bob")
    bob.join("lobby")
    first, _ = bob.say("lobby", "the release is at 14:00", "b1")
    second, _ = bob.say("lobby", "my password is hunter2", "b2")
    bob.say("lobby", "see you there", "b3")
    expect(messages(alice)).to_have_count(3)

    acked(
        bob,
        {
            "type": "edit",
            "room": "lobby",
            "seq": first["seq"],
            "text": "the release is at 15:00",
            "id": "b4",
        },
    )
    acked(bob, {"type": "delete", "room": "lobby", "seq": second["seq"], "id": "b5"})

    # Live: the targets change in place; the edit and the delete add no item of their own.
    after = ["the release is at 15:00", "message deleted", "see you there"]
    expect(messages(alice)).to_have_text(after)
    page = alice.page
    expect(page.locator(".message.edited .edited-mark")).to_have_text(["(edited)"])
    expect(page.locator(".message.deleted")).to_have_count(1)
    expect(page.locator(".message.deleted .text")).to_have_css("font-style", "italic")
    assert "hunter2" not in page.locator("#current").inner_text()
    assert "" not in shown_items(alice)

    # From history (a newcomer's join): the server serves the edited text with `edited` and the
    # deleted message as `redacted`, and the page shows them the same way.
    carol = new_tab(daemon.http_url("ws", "/"))
    sign_in(carol, "carol")
    expect(messages(carol)).to_have_text(after)
    expect(carol.page.locator(".message.edited .edited-mark")).to_have_text(["(edited)"])
    expect(carol.page.locator(".message.deleted")).to_have_count(1)
    assert "hunter2" not in carol.page.locator("#current").inner_text()
    assert "" not in shown_items(carol)


def test_an_event_type_the_page_does_not_know_shows_nothing_but_counts_for_resuming(
    make_daemon, new_tab, clients, expect
):
    """A proxy between page and server turns one of bob's messages into an event of a kind
    no client knows: the page shows no item for it, and after a reconnection it resumes the
    room from that event's seq (every event counts, shown or not)."""
    daemon = make_daemon()
    tab = new_tab(daemon.http_url("ws", "/"))
    sent: list[dict] = []
    routes = []

    def route(ws):
        server = ws.connect_to_server()
        routes.append(ws)

        def to_server(message):
            sent.append(json.loads(message))
            server.send(message)

        def to_page(message):
            frame = json.loads(message)
            if frame.get("type") == "message" and frame.get("text") == "make me a poll":
                frame = {key: frame[key] for key in ("room", "epoch", "seq", "ts", "from", "name")}
                frame |= {"type": "poll", "question": "lunch?"}
            ws.send(json.dumps(frame))

        ws.on_message(to_server)
        server.on_message(to_page)

    tab.page.route_web_socket("**/ws", route)
    sign_in(tab, "alice")
    bob = clients(daemon.url("ws"))
    bob.hello("bob")
    bob.join("lobby")
    bob.say("lobby", "before", "b1")
    poll, _ = bob.say("lobby", "make me a poll", "b2")
    expect(messages(tab)).to_have_text(["before"])
    tab.page.wait_for_timeout(300)  # the poll arrived right after "before"
    items = shown_items(tab)
    assert "" not in items, items
    assert not any("poll" in item or "lunch" in item for item in items), items
    assert tab.page.locator(f'.events [data-seq="{poll["seq"]}"]').count() == 0

    # Drop the page's socket: it reconnects and resumes the lobby from the poll's seq.
    routes[-1].close(code=1001, reason="going away")
    expect(tab.page.locator("#status")).to_have_attribute("data-state", "online")
    bob.say("lobby", "after", "b3")
    expect(messages(tab)).to_have_text(["before", "after"])
    resumed = [frame for frame in sent if frame["type"] == "join" and "since" in frame]
    assert resumed, sent
    assert resumed[-1]["since"]["seq"] == poll["seq"], resumed[-1]
    assert "" not in shown_items(tab)


def test_status_and_moderation_events_and_a_kick_on_the_customers_page(
    make_daemon, new_tab, clients, expect
):
    """An agent (a moderator of support rooms) resolves, edits a reply, deletes the customer's
    message, mutes and then kicks the customer: the page shows lines, never an empty bubble,
    and after the kick says why and stops writing to the room."""
    daemon = make_daemon(**SUPPORT)
    tab = new_tab(daemon.http_url("ws", "/support"))
    sign_in(tab, "carol")
    page = tab.page
    page.get_by_label("Message to support", exact=True).fill("my card number is 4111")
    page.get_by_label("Message to support", exact=True).press("Enter")
    expect(messages(tab)).to_have_text(["my card number is 4111"])

    agent = clients(daemon.url("ws"))
    agent.hello("agent1")
    agent.join("support-carol")
    carols = next(f for f in agent.received if f.get("type") == "joined")["history"]
    card = next(e for e in carols if e["type"] == "message" and e["from"] == "carol")
    reply, _ = agent.say("support-carol", "Hello carol!", "a1")
    acked(
        agent,
        {
            "type": "edit",
            "room": "support-carol",
            "seq": reply["seq"],
            "text": "Hello Carol!",
            "id": "a2",
        },
    )
    acked(agent, {"type": "delete", "room": "support-carol", "seq": card["seq"], "id": "a3"})
    acked(agent, {"type": "resolve", "room": "support-carol", "id": "a4"})
    acked(
        agent,
        {"type": "mute", "room": "support-carol", "user": "carol", "duration": 600, "id": "a5"},
    )

    expect(messages(tab)).to_have_text(["message deleted", "Hello Carol!"])
    expect(page.locator(".message.edited .edited-mark")).to_have_text(["(edited)"])
    expect(page.locator(".event.status")).to_contain_text("marked your conversation as resolved")
    expect(page.locator(".event.moderation.mute")).to_contain_text(
        "carol was muted by agent1 until"
    )
    assert "4111" not in page.locator("#current").inner_text()
    assert "" not in shown_items(tab)

    acked(agent, {"type": "kick", "room": "support-carol", "user": "carol", "id": "a6"})
    notice = page.get_by_role("alert").filter(has_text="removed")
    expect(notice).to_contain_text("You were removed from your conversation by agent1.")
    assert "" not in shown_items(tab)
    # The room is dropped, not joined again: what carol types now is not sent there.
    box = page.get_by_label("Message to support", exact=True)
    box.fill("still there?")
    box.press("Enter")
    expect(box).to_have_value("still there?")
    expect(page.locator(".events.pending .message")).to_have_count(0)
    assert not any(
        line.get("text") == "still there?" for line in daemon.transcript("support-carol")
    )


def test_a_bots_message_and_status_carry_a_bot_badge(make_daemon, new_tab, tmp_path, expect):
    key = "browser-test-key-0123456789"
    keys = tmp_path / "api-keys"
    keys.write_text(f"{key}\n")
    keys.chmod(0o600)
    api = {"enabled": "yes", "port": 0, "keys_file": keys, "bots": "shopbot"}
    daemon = make_daemon(api=api, **SUPPORT)
    tab = new_tab(daemon.http_url("ws", "/support"))
    sign_in(tab, "carol")
    box = tab.page.get_by_label("Message to support", exact=True)
    box.fill("where is my order?")
    box.press("Enter")
    expect(messages(tab)).to_have_text(["where is my order?"])

    port = daemon.ports["api"]
    published = {"room": "support-carol", "text": "Shipped!", "from": "shopbot", "id": "o-1"}
    status, answer = api_call(port, "POST", "/api/publish", published, key)
    assert status == 200, answer
    status, answer = api_call(
        port, "POST", "/api/rooms/support-carol/resolve", {"from": "shopbot", "id": "r-1"}, key
    )
    assert status == 200, answer

    expect(messages(tab)).to_have_text(["where is my order?", "Shipped!"])
    bot_message = tab.page.locator(".message", has_text="Shipped!")
    expect(bot_message.locator(".meta .bot-badge")).to_have_text("bot")
    carols = tab.page.locator(".message", has_text="where is my order?")
    expect(carols.locator(".bot-badge")).to_have_count(0)
    expect(tab.page.locator(".event.status .bot-badge")).to_have_text("bot")
