"""The chat page (/) in Chromium: rooms, messages, server errors, text-only rendering, resume."""

from __future__ import annotations

import re
import urllib.request

from browser_helpers import free_port, screenshot, sign_in

XSS = "<img src=x onerror=alert(1)>"


def messages(tab):
    """The texts of the room's messages (acknowledged ones; not those still being sent)."""
    return tab.page.locator(".events:not(.pending) .message .text")


def say(tab, text: str) -> None:
    """Type into the message box like a person: Shift+Enter for new lines, Enter to send."""
    box = tab.page.get_by_label("Message", exact=True)
    for number, line in enumerate(text.split("\n")):
        if number:
            box.press("Shift+Enter")
        box.press_sequentially(line)
    box.press("Enter")


def test_two_people_chat_in_a_room_and_each_sees_the_others_messages_once(
    make_daemon, new_tab, expect
):
    daemon = make_daemon()
    alice = new_tab(daemon.http_url("ws", "/"))
    sign_in(alice, "alice")
    bob = new_tab(daemon.http_url("ws", "/"))
    sign_in(bob, "bob")

    # Both are in the lobby, and each sees the other in its member list.
    for tab in (alice, bob):
        expect(tab.page.locator("#room-title")).to_have_text("#lobby")
        expect(tab.page.locator("#member-list li")).to_contain_text(["alice", "bob"])

    say(alice, "Morning! Is the release still on for today?")
    expect(messages(bob)).to_have_text(["Morning! Is the release still on for today?"])
    say(bob, "Yes, at 15:00.\nI'll post the notes here.")
    say(alice, "Great — danke schön!")
    conversation = [
        "Morning! Is the release still on for today?",
        "Yes, at 15:00.\nI'll post the notes here.",
        "Great — danke schön!",
    ]
    for tab in (alice, bob):
        expect(messages(tab)).to_have_text(conversation)
        # The line break is kept (Shift+Enter), not flattened.
        assert messages(tab).nth(1).inner_text() == conversation[1]
        expect(tab.page.locator(".events.pending .message")).to_have_count(0)

    # A second room, joined by name (room names are lower case); the lobby's news shows up
    # as an unread count while alice is away from it.
    alice.page.get_by_label("Join a room").fill("Release")
    alice.page.get_by_label("Join a room").press("Enter")
    expect(alice.page.locator("#room-title")).to_have_text("#release")
    expect(alice.page.locator("#room-list .room-name")).to_have_text(["#lobby", "#release"])
    expect(messages(alice)).to_have_count(0)
    say(bob, "Notes: https://example.invalid/notes")
    lobby = alice.page.locator("#room-list li", has_text="#lobby")
    expect(lobby.locator(".badge")).to_have_text("1")
    lobby.get_by_role("button").click()
    expect(messages(alice)).to_have_count(4)
    expect(lobby.locator(".badge")).to_have_count(0)
    screenshot(alice, "chat")


def test_two_tabs_of_one_person_chat_side_by_side_as_one_user(make_daemon, new_tab, expect):
    """A second tab of the same browser (same localStorage) presents the user secret the
    first one got: another session of alice, not `name_taken`. Both tabs show everything,
    the member list shows alice once, and the others see one join, and no leave while a tab
    of hers is still open."""
    daemon = make_daemon()
    url = daemon.http_url("ws", "/")
    bob = new_tab(url)
    sign_in(bob, "bob")
    first = new_tab(url)
    sign_in(first, "alice")
    second = new_tab(url, beside=first)
    sign_in(second, "alice")  # the same name: welcomed, no "name is in use"
    for tab in (first, second):
        expect(tab.page.locator("#login")).to_be_hidden()
        expect(tab.page.locator("#me")).to_have_text("alice")
        expect(tab.page.locator("#member-list li")).to_have_text(["alice (you)", "bob"])
    expect(bob.page.locator("#member-list li")).to_have_text(["alice", "bob (you)"])

    say(first, "typed in the first tab")
    say(second, "typed in the second tab")
    say(bob, "hi alice, both of you")
    conversation = ["typed in the first tab", "typed in the second tab", "hi alice, both of you"]
    for tab in (first, second, bob):
        expect(messages(tab)).to_have_text(conversation)
        expect(tab.page.locator(".events.pending .message")).to_have_count(0)
    # Both tabs know the messages from either tab as alice's own.
    for tab in (first, second):
        expect(tab.page.locator(".message.mine .text")).to_have_text(conversation[:2])

    # Closing one tab is no leave: alice is still here in the other.
    first.page.close()
    say(second, "still here")
    expect(messages(bob)).to_have_text([*conversation, "still here"])
    expect(bob.page.locator(".presence-text")).to_have_text(["bob joined", "alice joined"])
    expect(bob.page.locator("#member-list li")).to_have_text(["alice", "bob (you)"])
    presence = [line for line in daemon.transcript("lobby") if line["type"] == "presence"]
    assert [(line["user"], line["event"]) for line in presence] == [
        ("bob", "join"),
        ("alice", "join"),
    ]


def test_the_servers_error_message_is_shown_in_words(make_daemon, new_tab, clients, expect):
    daemon = make_daemon()
    # What the server says about a bad room name (its words may change; the page shows them).
    probe = clients(daemon.url("ws"))
    probe.hello("probe")
    probe.send({"type": "join", "room": "no spaces!", "id": "j1"})
    refusal = probe.expect(type="error", code="bad_room", ref="j1")

    tab = new_tab(daemon.http_url("ws", "/"))
    sign_in(tab, "carol")
    tab.page.get_by_label("Join a room").fill("no spaces!")
    tab.page.get_by_label("Join a room").press("Enter")
    notice = tab.page.get_by_role("alert").filter(has_text="Cannot join")
    expect(notice).to_contain_text(refusal["message"])
    expect(tab.page.locator("#room-list .room-name")).to_have_text(["#lobby"])
    expect(tab.page.locator("#room-title")).to_have_text("#lobby")


def test_markup_in_messages_is_shown_as_text(make_daemon, new_tab, clients, expect):
    daemon = make_daemon()
    tab = new_tab(daemon.http_url("ws", "/"))
    sign_in(tab, "alice")
    mallory = clients(daemon.url("ws"))
    mallory.hello("mallory")
    mallory.join("lobby")
    mallory.say("lobby", XSS, "x1")
    mallory.say("lobby", "<script>alert(2)</script><b>bold?</b>", "x2")
    say(tab, XSS)

    expect(messages(tab)).to_have_text([XSS, "<script>alert(2)</script><b>bold?</b>", XSS])
    for tag in ("img", "script", "b"):
        expect(tab.page.locator(f"#current {tag}")).to_have_count(0)
    # Markup from the server must not run either: no dialog opened (the fixture also fails
    # the test at teardown if one did).
    assert tab.dialogs == []


def test_the_page_resumes_after_a_daemon_restart_without_gap_or_duplicate(
    make_daemon, new_tab, clients, expect
):
    """SIGTERM the daemon under a connected page, post while the page cannot reconnect, and
    start the daemon again on the same port: the page resumes the room with `since`, shows the
    messages it missed once each, and delivers what its user typed during the outage once."""
    daemon = make_daemon(ws={"port": free_port()})
    tab = new_tab(daemon.http_url("ws", "/"))
    sign_in(tab, "alice")
    bob = clients(daemon.url("ws"))
    bob.hello("bob")
    bob.join("lobby")
    bob.say("lobby", "before the restart", "b1")
    expect(messages(tab)).to_have_text(["before the restart"])

    # The page keeps its socket while offline, but cannot open a new one: this holds it
    # back from reconnecting until the missed messages are posted.
    tab.context.set_offline(True)
    daemon.stop()
    status = tab.page.locator("#status")
    expect(status).to_have_attribute("data-state", "offline")
    expect(status).to_contain_text("the server is restarting")
    say(tab, "typed during the outage")
    expect(tab.page.locator(".events.pending .message")).to_contain_text(
        "waiting for the connection"
    )

    daemon.start()
    bob = clients(daemon.url("ws"))
    bob.hello("bob")
    bob.join("lobby")
    missed = [f"missed {number}" for number in (1, 2, 3)]
    for number, text in enumerate(missed):
        bob.say("lobby", text, f"m{number}")

    tab.context.set_offline(False)  # the page's "online" handler reconnects at once
    expect(status).to_have_attribute("data-state", "online")
    expect(messages(tab)).to_have_text(["before the restart", *missed, "typed during the outage"])
    expect(tab.page.locator(".events.pending .message")).to_have_count(0)
    # Resumed (joined with `since`, exactly the missed events), not reloaded from scratch.
    assert resumes(daemon, "recovered") == 1
    assert resumes(daemon, "not_recovered") == 0
    # Each event once, in order: the page's list and the room's sequence agree.
    seqs = [
        int(seq)
        for seq in tab.page.locator(".events .event").evaluate_all(
            "items => items.map(item => item.dataset.seq)"
        )
    ]
    assert seqs == sorted(set(seqs)), seqs
    # The server took what alice typed once, however often the page may have sent it.
    said = [line for line in daemon.transcript("lobby") if line.get("from") == "alice"]
    assert [line["text"] for line in said] == ["typed during the outage"]


def resumes(daemon, outcome: str) -> int:
    """chatd_resumes_total{outcome} from the daemon's metrics listener."""
    url = f"http://127.0.0.1:{daemon.ports['metrics']}/metrics"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf'^chatd_resumes_total{{outcome="{outcome}"}} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def test_on_a_phone_the_room_list_folds_behind_a_button(make_daemon, new_tab, expect):
    daemon = make_daemon()
    tab = new_tab(daemon.http_url("ws", "/"), width=390, height=760)
    sign_in(tab, "alice")
    page = tab.page
    toggle = page.get_by_role("button", name="Rooms")
    expect(page.locator("#sidebar")).to_be_hidden()
    expect(page.get_by_label("Message", exact=True)).to_be_visible()
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    page.get_by_label("Join a room").fill("mobile")
    page.get_by_label("Join a room").press("Enter")
    expect(page.locator("#room-title")).to_have_text("#mobile")
    expect(page.locator("#sidebar")).to_be_hidden()
    say(tab, "hello from a phone")
    expect(messages(tab)).to_have_text(["hello from a phone"])
    # Nothing wider than the screen: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
