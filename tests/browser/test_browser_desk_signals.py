"""What the visitor's page (/support) and the agents' desk (/agent) tell each other beside the
messages (docs/protocol.md): who is typing, read markers ("Seen", the queue's unread badges),
the agents' internal notes, canned responses and the customer's rating."""

from __future__ import annotations

import json
import signal

from browser_helpers import conversation, desk_entry, open_page, send, sign_in

TRIAL_AGENTS = {"enabled": "yes", "trial_agents": "agent1"}
# A short typing timeout, so that an indicator nobody renews ends within the test's waits.
TYPING = {"rooms": {"typing_timeout": "1s"}}
NOTE_LABEL = "Internal note — customers don't see this"


def frames_sent(tab) -> list[dict]:
    """The frames the page sends on its WebSocket from now on (grows as it sends)."""
    sent: list[dict] = []
    tab.page.on(
        "websocket",
        lambda socket: socket.on("framesent", lambda payload: sent.append(json.loads(payload))),
    )
    return sent


def test_typing_read_markers_and_unread_badges_between_the_visitor_and_the_desk(
    make_daemon, new_tab, clients, expect
):
    desk = make_daemon(support=TRIAL_AGENTS, **TYPING)
    alice = open_page(new_tab, desk, "/support", "alice")
    send(alice, "Hello, is anyone there?", "Message to support")
    send(alice, "My order #1234 has not arrived.", "Message to support")
    expect(conversation(alice)).to_have_count(2)

    agent_page = new_tab("about:blank")
    sent_by_agent = frames_sent(agent_page)
    agent_page.page.goto(desk.http_url("ws", "/agent"))
    sign_in(agent_page, "agent1")
    agent = agent_page
    # The badge counts the customer's messages the agent has not read.
    expect(desk_entry(agent, "alice").locator(".badge.unread")).to_have_text("2")
    expect(desk_entry(agent, "alice").locator(".badge.unread")).to_have_attribute(
        "aria-label", "2 unread"
    )
    seen = alice.page.locator(".seen")
    expect(seen).to_have_count(0)

    # The agent opens it: the badge goes, and the customer sees "Seen" under their latest.
    desk_entry(agent, "alice").locator(".queue-item").click()
    expect(conversation(agent)).to_have_count(2)
    expect(desk_entry(agent, "alice").locator(".badge.unread")).to_have_count(0)
    expect(alice.page.locator(".message.mine").last.locator(".seen")).to_have_text("Seen")
    expect(seen).to_have_count(1)

    # The agent types: the customer sees it, until the agent's reply arrives.
    typing = alice.page.locator("#typing")
    expect(typing).to_have_text("")
    reply = agent.page.get_by_label("Reply", exact=True)
    reply.press_sequentially("Let me check", delay=20)
    expect(typing).to_have_text("agent1 is typing…")
    reply.press("Enter")
    expect(conversation(alice).last).to_have_text("Let me check")
    expect(typing).to_have_text("")
    # "Seen" belongs to the customer's latest message only.
    expect(alice.page.locator(".message.mine").last.locator(".seen")).to_have_count(1)

    # Typing that stops ends by itself (the server's [rooms] typing_timeout, 1 s here).
    reply.press_sequentially("One more thing", delay=20)
    expect(typing).to_have_text("agent1 is typing…")
    expect(typing).to_have_text("", timeout=5_000)

    # And the other way round: the desk names the customer typing, in the open conversation.
    agent_typing = agent.page.locator("#typing")
    alice.page.get_by_label("Message to support", exact=True).press_sequentially("Thanks", delay=20)
    expect(agent_typing).to_have_text("alice is typing…")
    alice.page.get_by_label("Message to support", exact=True).fill("")
    expect(agent_typing).to_have_text("")

    # A new message in the open conversation is read at once: no badge; "Seen" moves to it.
    send(alice, "Still there?", "Message to support")
    expect(conversation(agent).last).to_have_text("Still there?")
    expect(alice.page.locator(".message.mine").last.locator(".seen")).to_have_text("Seen")
    expect(seen).to_have_count(1)
    # Another customer's conversation, not open, counts up.
    bob = clients(desk.url("ws"))
    bob_room = bob.hello("bob")["support_room"]
    bob.join(bob_room)
    bob.say(bob_room, "Hi", "b-1")
    bob.say(bob_room, "Hello?", "b-2")
    expect(desk_entry(agent, "bob").locator(".badge.unread")).to_have_text("2")
    expect(desk_entry(agent, "alice").locator(".badge.unread")).to_have_count(0)

    # Never a marker lower than one sent before, and none for the conversation not open.
    reads = [(frame["room"], frame["seq"]) for frame in sent_by_agent if frame["type"] == "read"]
    seqs = [seq for _room, seq in reads]
    assert seqs and seqs == sorted(set(seqs)), f"read markers went back or repeated: {reads}"
    assert {room for room, _seq in reads} == {"support-alice"}


def test_notes_stay_on_the_desk_and_canned_responses_fill_the_composer(
    make_daemon, new_tab, tmp_path, expect
):
    canned_file = tmp_path / "canned.txt"
    canned_file.write_text(
        "greet: Hello! How can I help you today?\nrefund: Refunds take 3 to 5 days.\n",
        encoding="utf-8",
    )
    desk = make_daemon(support={**TRIAL_AGENTS, "canned_file": canned_file})
    alice = open_page(new_tab, desk, "/support", "alice")
    send(alice, "Can I get my money back?", "Message to support")
    agent = open_page(new_tab, desk, "/agent", "agent1")
    desk_entry(agent, "alice").locator(".queue-item").click()
    expect(conversation(agent)).to_have_text(["Can I get my money back?"])

    # A note: only the desk shows it, as a note.
    note_text = "VIP customer: refund without asking questions"
    note_mode = agent.page.get_by_role("button", name="Note", exact=True)
    note_mode.click()
    expect(note_mode).to_have_attribute("aria-pressed", "true")
    send(agent, note_text, "Reply")
    note = agent.page.locator(".events:not(.pending) .event.note")
    expect(note.locator(".text")).to_have_text(note_text)
    expect(note.locator(".note-label")).to_have_text(NOTE_LABEL)
    note_mode.click()
    expect(note_mode).to_have_attribute("aria-pressed", "false")

    # Canned responses: "/" lists them, the arrows move, Escape closes.
    reply = agent.page.get_by_label("Reply", exact=True)
    options = agent.page.get_by_role("listbox", name="Canned responses").get_by_role("option")
    reply.press_sequentially("/")
    expect(options).to_have_count(2)
    expect(options.first).to_have_attribute("aria-selected", "true")
    reply.press("ArrowDown")
    expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    option_id = options.nth(1).get_attribute("id")
    expect(reply).to_have_attribute("aria-activedescendant", option_id)
    reply.press("Escape")
    expect(options).to_have_count(0)
    reply.fill("")
    # "/gree" offers the greeting alone; Enter puts its text in place of "/gree".
    reply.press_sequentially("/gree")
    expect(options).to_have_count(1)
    expect(options.first).to_contain_text("Hello! How can I help you today?")
    reply.press("Enter")
    expect(reply).to_have_value("Hello! How can I help you today?")
    expect(options).to_have_count(0)
    reply.press("Enter")
    expect(conversation(alice)).to_have_text(
        ["Can I get my money back?", "Hello! How can I help you today?"]
    )
    assert note_text not in alice.page.locator("body").inner_text()
    assert note_text not in alice.page.content()
    notes = [e for e in desk.transcript("support-alice") if e["type"] == "note"]
    assert [e["text"] for e in notes] == [note_text]

    # After a reload the history comes from the server: still no note for the customer.
    alice.page.reload()
    sign_in(alice, "alice")
    expect(conversation(alice)).to_have_text(
        ["Can I get my money back?", "Hello! How can I help you today?"]
    )
    assert note_text not in alice.page.content()

    # SIGHUP reads the file again: the list open in the desk shows the new responses.
    reply.fill("")
    reply.press_sequentially("/")
    expect(options).to_have_count(2)
    canned_file.write_text("shipping: It ships tomorrow.\n", encoding="utf-8")
    desk.process.send_signal(signal.SIGHUP)
    expect(options).to_have_count(1)
    expect(options.first).to_contain_text("It ships tomorrow.")
    options.first.click()
    expect(reply).to_have_value("It ships tomorrow.")


def test_the_visitor_rates_a_resolved_conversation_on_a_phone(make_daemon, new_tab, expect):
    desk = make_daemon(support=TRIAL_AGENTS)
    phone = {"width": 390, "height": 780}
    alice = open_page(new_tab, desk, "/support", "alice", **phone)
    send(alice, "Where is my parcel?", "Message to support")
    agent = open_page(new_tab, desk, "/agent", "agent1")
    desk_entry(agent, "alice").locator(".queue-item").click()
    send(agent, "It was delivered this morning.", "Reply")
    rating = alice.page.get_by_role("region", name="How did we do?")
    expect(rating).to_be_hidden()

    agent.page.get_by_role("button", name="Resolve", exact=True).click()
    expect(rating).to_be_visible()
    stars = rating.get_by_role("button", name="star", exact=False)
    expect(stars).to_have_count(5)
    send_rating = rating.get_by_role("button", name="Send rating")
    expect(send_rating).to_be_disabled()
    rating.get_by_role("button", name="4 stars").click()
    expect(rating.get_by_role("button", name="4 stars")).to_have_attribute("aria-pressed", "true")
    rating.get_by_label("Comment (optional)").fill("Quick and kind")
    send_rating.click()
    expect(rating).to_contain_text("Thanks for your rating")
    expect(send_rating).to_be_hidden()

    # The desk shows the rating in the conversation and in the queue.
    expect(agent.page.locator(".event.rating .presence-text")).to_have_text(
        ["alice rated 4/5: Quick and kind"]
    )
    expect(desk_entry(agent, "alice").locator(".entry-rating")).to_have_text("Rated 4/5")
    ratings = [e for e in desk.transcript("support-alice") if e["type"] == "rating"]
    assert [(e["score"], e.get("comment")) for e in ratings] == [(4, "Quick and kind")]

    # After a reload the page still knows it was rated; writing again opens it: no form.
    alice.page.reload()
    sign_in(alice, "alice")
    expect(rating).to_contain_text("Thanks for your rating")
    overflow = alice.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the visitor's page is {overflow}px wider than the phone"
    send(alice, "One more question.", "Message to support")
    expect(rating).to_be_hidden()
