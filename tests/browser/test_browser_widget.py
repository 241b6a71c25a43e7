"""The embeddable widget (README, "Put the chat on your site"): a page of another site
includes /widget.js, an anonymous visitor chats in its drawer, reloads and finds the same
conversation, and an agent answers on /agent; a site not in `[support] embed_origins` gets no
chat in its frame (CSP frame-ancestors)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator

import pytest


class _SitePage(http.server.BaseHTTPRequestHandler):
    """Any path: a shop's page that includes the daemon's widget, as a site would."""

    widget_url = ""

    def do_GET(self):
        body = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Shop</title>"
            "</head><body><h1>A shop on another site</h1>"
            f"<script src='{self.widget_url}' data-title='Ask us' defer></script>"
            "</body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def site() -> Iterator[Callable[[], tuple[str, Callable[[str], None]]]]:
    """site(): a shop's web server on a port of its own (http://localhost:PORT, another origin
    and another site than the daemon's http://127.0.0.1); returns its origin and a function
    that sets the widget URL its page includes."""
    servers = []

    def start():
        handler = type("Page", (_SitePage,), {})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)

        def include(widget_url: str) -> None:
            handler.widget_url = widget_url

        return f"http://localhost:{server.server_address[1]}", include

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def chat_frame(tab):
    return tab.page.frame_locator("iframe[data-chatd-widget=frame]")


def open_widget(tab, expect):
    button = tab.page.get_by_role("button", name="Ask us")
    expect(button).to_be_visible()
    button.click()
    expect(button).to_have_attribute("aria-expanded", "true")


def messages(frame):
    return frame.locator(".events:not(.pending) .message .text")


def test_a_visitor_chats_from_another_site_and_an_agent_answers(make_daemon, site, new_tab, expect):
    shop, include_on_shop = site()
    daemon = make_daemon(
        support={
            "enabled": "yes",
            "trial_agents": "agent1",
            "visitors": "anonymous",
            "embed_origins": shop,
        }
    )
    include_on_shop(daemon.http_url("ws", "/widget.js"))

    visitor = new_tab(shop + "/products")
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


def test_a_site_not_in_embed_origins_gets_no_chat_in_its_frame(make_daemon, site, new_tab, expect):
    allowed, _include_on_allowed = site()
    stranger, include_on_stranger = site()
    daemon = make_daemon(
        support={"enabled": "yes", "visitors": "anonymous", "embed_origins": allowed}
    )
    include_on_stranger(daemon.http_url("ws", "/widget.js"))
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
