"""The embeddable widget (README, "Put the chat on your site"): a page of another site
includes /widget.js, an anonymous visitor chats in its drawer, reloads and finds the same
conversation, and an agent answers on /agent; a site not in `[support] embed_origins` gets no
chat in its frame (CSP frame-ancestors)."""

from __future__ import annotations

import time


def include(page, daemon) -> None:
    """The shop's page includes the daemon's widget, titled "Ask us"."""
    page.widget_url = daemon.http_url("ws", "/widget.js")
    page.attributes = {"data-title": "Ask us"}


def chat_frame(tab):
    return tab.page.frame_locator("iframe[data-chatd-widget=frame]")


def open_widget(tab, expect):
    button = tab.page.get_by_role("button", name="Ask us")
    expect(button).to_be_visible()
    button.click()
    expect(button).to_have_attribute("aria-expanded", "true")


def messages(frame):
    return frame.locator(".events:not(.pending) .message .text")


def test_a_visitor_chats_from_another_site_and_an_agent_answers(make_daemon, shop, new_tab, expect):
    origin, page = shop()
    daemon = make_daemon(
        support={
            "enabled": "yes",
            "trial_agents": "agent1",
            "visitors": "anonymous",
            "embed_origins": origin,
        }
    )
    include(page, daemon)

    visitor = new_tab(origin + "/products")
    open_widget(visitor, expect)
    chat = chat_frame(visitor)
    expect(chat.locator("#status[data-state=online]")).to_be_attached()
    expect(chat.locator(".topbar")).to_be_hidden()  # the embedded layout
    chat.locator("#profile summary").click()
    chat.locator("#profile-name").fill("Ann Lee")
    chat.locator("#profile-email").fill("ann@example.com")
    chat.locator("#profile button[type=submit]").click()
    box = chat.get_by_label("Message to support", exact=True)
    box.fill("Do you ship to Norway?")
    box.press("Enter")
    expect(messages(chat)).to_have_text(["Do you ship to Norway?"])

    # A reload of the shop's page: the drawer opens on the same conversation.
    visitor.page.reload()
    open_widget(visitor, expect)
    chat = chat_frame(visitor)
    expect(messages(chat)).to_have_text(["Do you ship to Norway?"])

    agent = new_tab(daemon.http_url("ws", "/agent"))
    agent.page.locator("#login [name=name]").fill("agent1")
    agent.page.locator("#login [name=name]").press("Enter")
    item = agent.page.locator(".queue-item", has_text="Ann Lee")
    expect(item.locator(".last")).to_contain_text("Do you ship to Norway?")
    item.click()
    reply = agent.page.get_by_label("Reply", exact=True)
    reply.fill("We do, in 3 days.")
    reply.press("Enter")
    expect(messages(chat)).to_have_text(["Do you ship to Norway?", "We do, in 3 days."])


def test_a_site_not_in_embed_origins_gets_no_chat_in_its_frame(make_daemon, shop, new_tab, expect):
    allowed, _allowed_page = shop()
    stranger, stranger_page = shop()
    daemon = make_daemon(
        support={"enabled": "yes", "visitors": "anonymous", "embed_origins": allowed}
    )
    include(stranger_page, daemon)
    tab = new_tab(stranger + "/")
    open_widget(tab, expect)
    frame_element = tab.page.locator("iframe[data-chatd-widget=frame]")
    expect(frame_element).to_be_attached()
    # The browser refuses to render the page in the frame (Chromium puts an error page of its
    # own there): no document of the daemon's is in it, and no visitor ever connected.
    frame = frame_element.element_handle().content_frame()
    frame.wait_for_load_state()
    assert not frame.url.startswith(daemon.http_url("ws", "/")), frame.url
    assert frame.locator("#composer").count() == 0
    time.sleep(1)  # a page let in would have connected by now
    assert " is v-" not in daemon.log
