"""The desk's assignment and availability in the browser (docs/protocol.md, "Support desk"):
agents claim, filter and transfer conversations on /agent, say whether they are online or away,
and the customer's page (/support) tells whether anyone is there and who handles it."""

from __future__ import annotations

import json

import pytest
from browser_helpers import conversation, desk_entry, open_page, send, sign_in

SUPPORT = {"support": {"enabled": "yes", "trial_agents": "agent1 agent2 agent3"}}
NOBODY_ONLINE = "No agent is online right now — leave a message and we'll answer as soon as we can"


@pytest.fixture
def desk(make_daemon):
    return make_daemon(**SUPPORT)


def listed(tab):
    return tab.page.locator(".queue-item .customer")


def customer_writes(clients, desk, name: str, text: str) -> str:
    """A customer (a `websockets` client) writes; returns their room."""
    customer = clients(desk.url("ws"))
    room = customer.hello(name)["support_room"]
    customer.join(room)
    customer.say(room, text, f"{name}-1")
    return room


class HeldBack:
    """Holds back the server's frames of one type on their way to a page, until released:
    the page's view of the queue goes stale, as on a slow network."""

    def __init__(self, page, frame_type: str):
        self.frame_type = frame_type
        self.holding = False
        self.held: list[str] = []
        self.page_side = None
        page.route_web_socket("**/ws", self._route)

    def _route(self, socket) -> None:
        self.page_side = socket
        server = socket.connect_to_server()
        server.on_message(self._from_server)

    def _from_server(self, message) -> None:
        if self.holding and json.loads(message).get("type") == self.frame_type:
            self.held.append(message)
        else:
            self.page_side.send(message)

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        self.holding = False
        for message in self.held:
            self.page_side.send(message)
        self.held.clear()


def test_agents_claim_filter_and_transfer_while_the_customer_sees_who_is_there(
    desk, new_tab, clients, expect
):
    alice = new_tab(desk.http_url("ws", "/support"))
    sign_in(alice, "alice")
    agents_online = alice.page.locator("#agents-online")
    expect(agents_online).to_have_text(NOBODY_ONLINE)
    # Nobody is there, and the customer can write all the same.
    send(alice, "My parcel is late.", "Message to support")
    expect(conversation(alice)).to_have_text(["My parcel is late."])

    agent1 = open_page(new_tab, desk, "/agent", "agent1")
    expect(agents_online).to_have_text("An agent is online")
    agent2 = open_page(new_tab, desk, "/agent", "agent2")
    expect(agent2.page.locator("#agent-list .agent-name")).to_have_text(["agent1", "agent2 (you)"])
    expect(agent2.page.locator("#agent-list .agent-status")).to_have_text(["Online", "Online"])
    for tab in (agent1, agent2):
        expect(desk_entry(tab, "alice").locator(".assignee")).to_have_text("Unassigned")

    # agent1 claims it: agent2 sees the new assignee live, and nobody has a Claim button now.
    desk_entry(agent1, "alice").get_by_role("button", name="Claim").click()
    expect(desk_entry(agent1, "alice").locator(".assignee")).to_have_text("You")
    expect(desk_entry(agent2, "alice").locator(".assignee")).to_have_text("agent1")
    for tab in (agent1, agent2):
        expect(desk_entry(tab, "alice").get_by_role("button", name="Claim")).to_have_count(0)
    expect(alice.page.locator(".event.assignment .presence-text")).to_have_text(
        ["agent1 is handling your conversation"]
    )

    # The view filter asks the server for each agent's own share.
    customer_writes(clients, desk, "bob", "Can I pay by invoice?")
    expect(listed(agent1)).to_have_text(["alice", "bob"])
    agent1.page.get_by_label("Assigned").select_option("mine")
    expect(listed(agent1)).to_have_text(["alice"])
    agent1.page.get_by_label("Assigned").select_option("unassigned")
    expect(listed(agent1)).to_have_text(["bob"])
    expect(desk_entry(agent1, "bob").get_by_role("button", name="Claim")).to_be_visible()
    agent2.page.get_by_label("Assigned").select_option("mine")
    expect(agent2.page.get_by_text("No conversations assigned to you.")).to_be_visible()
    expect(listed(agent2)).to_have_count(0)

    # agent1 hands alice over to agent2: it leaves agent1's "Mine" and enters agent2's, live.
    agent1.page.get_by_label("Assigned").select_option("mine")
    desk_entry(agent1, "alice").locator(".queue-item").click()
    head = agent1.page.locator("#room-sub")
    expect(head).to_contain_text("assigned to you")
    assign_to = agent1.page.get_by_label("Assign to")
    expect(assign_to.locator("option")).to_have_text(["Nobody", "You", "agent2"])
    transfer = agent1.page.get_by_role("button", name="Transfer")
    expect(transfer).to_be_disabled()  # "You" is picked: nothing to change
    assign_to.select_option(label="agent2")
    transfer.click()
    expect(listed(agent2)).to_have_text(["alice"])
    expect(desk_entry(agent2, "alice").locator(".assignee")).to_have_text("You")
    expect(agent1.page.get_by_text("No conversations assigned to you.")).to_be_visible()
    expect(head).to_contain_text("assigned to agent2")
    expect(agent1.page.locator(".event.assignment .presence-text")).to_have_text(
        ["agent1 took the conversation", "agent1 assigned the conversation to agent2"]
    )
    expect(alice.page.locator(".event.assignment .presence-text")).to_have_text(
        ["agent1 is handling your conversation", "agent2 is handling your conversation"]
    )

    # Away: the customer is told only when no agent at all is online any more.
    agent1.page.get_by_label("Availability").select_option("away")
    expect(agent2.page.locator("#agent-list .agent-status")).to_have_text(["Away", "Online"])
    expect(agents_online).to_have_text("An agent is online")
    agent2.page.get_by_label("Availability").select_option("away")
    expect(agents_online).to_have_text(NOBODY_ONLINE)
    expect(agent1.page.locator("#agent-list .agent-status")).to_have_text(["Away", "Away"])
    send(alice, "Anyone there?", "Message to support")
    expect(conversation(agent1)).to_have_text(["My parcel is late.", "Anyone there?"])
    agent1.page.get_by_label("Availability").select_option("online")
    expect(agents_online).to_have_text("An agent is online")
    # What an agent chose is kept across a reload of the desk.
    agent2.page.reload()
    sign_in(agent2, "agent2")
    expect(agent2.page.get_by_label("Availability")).to_have_value("away")


def test_claiming_a_stale_entry_says_in_words_who_claimed_it_first(desk, new_tab, clients, expect):
    room = customer_writes(clients, desk, "alice", "Hello?")
    agent2 = new_tab(desk.http_url("ws", "/agent"))
    updates = HeldBack(agent2.page, "conversation")
    sign_in(agent2, "agent2")
    claim = desk_entry(agent2, "alice").get_by_role("button", name="Claim")
    expect(claim).to_be_visible()

    # agent3 claims it while agent2's page does not hear of it.
    updates.hold()
    agent3 = clients(desk.url("ws"))
    agent3.hello("agent3")
    agent3.send({"type": "assign", "room": room, "id": "a-1"})
    agent3.recv_until(lambda frame: frame.get("type") == "ack" and frame.get("id") == "a-1")
    expect(desk_entry(agent2, "alice").locator(".assignee")).to_have_text("Unassigned")
    claim.click()
    notice = agent2.page.locator("#notice")
    expect(notice).to_contain_text("Conversation with alice: another agent claimed it first.")

    # The update arrives: the notice names who was first, and the entry shows them.
    updates.release()
    expect(notice).to_contain_text("Conversation with alice: agent3 claimed it first.")
    expect(desk_entry(agent2, "alice").locator(".assignee")).to_have_text("agent3")
    expect(claim).to_have_count(0)
    assignments = [e for e in desk.transcript(room) if e["type"] == "assignment"]
    assert [e["assignee"] for e in assignments] == ["agent3"]

    # Nothing broke: agent2 can still open the conversation and help.
    desk_entry(agent2, "alice").locator(".queue-item").click()
    expect(agent2.page.locator("#room-sub")).to_contain_text("assigned to agent3")
    send(agent2, "agent3 has it; I am here too.", "Reply")
    expect(conversation(agent2)).to_have_text(["Hello?", "agent3 has it; I am here too."])


def test_on_a_phone_the_desk_claims_and_transfers_and_the_visitor_sees_who_is_there(
    desk, new_tab, expect
):
    phone = {"width": 390, "height": 780}
    alice = new_tab(desk.http_url("ws", "/support"), **phone)
    sign_in(alice, "alice")
    expect(alice.page.locator("#agents-online")).to_have_text(NOBODY_ONLINE)
    send(alice, "Hi, a question about sizes.", "Message to support")
    agent = open_page(new_tab, desk, "/agent", "agent1", **phone)
    expect(alice.page.locator("#agents-online")).to_have_text("An agent is online")
    expect(agent.page.get_by_label("Availability")).to_be_visible()
    expect(agent.page.get_by_label("Availability")).to_have_value("online")

    # The queue folds away behind its button; the Claim button works from the keyboard.
    agent.page.get_by_role("button", name="Queue").click()
    desk_entry(agent, "alice").get_by_role("button", name="Claim").press("Enter")
    expect(desk_entry(agent, "alice").locator(".assignee")).to_have_text("You")
    desk_entry(agent, "alice").locator(".queue-item").click()
    expect(agent.page.get_by_label("Assign to")).to_be_visible()
    expect(agent.page.get_by_role("button", name="Transfer")).to_be_in_viewport()
    expect(alice.page.locator(".event.assignment .presence-text")).to_have_text(
        ["agent1 is handling your conversation"]
    )
    for tab in (agent, alice):
        overflow = tab.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{tab.page.url} is {overflow}px wider than the phone"
