"""The page over https and its socket over wss, with Chromium trusting the test CA.

No certificate error is ignored: the browser fixture (conftest.py) imports the session's test
CA into the NSS database in Chromium's HOME, as a person would import their company's CA, and
the daemon's wss listener serves a certificate for localhost issued by that CA.
"""

from __future__ import annotations

from browser_helpers import sign_in, unavailable


def test_the_page_over_https_talks_over_wss_with_a_page_over_http(
    browser, make_daemon, new_tab, expect
):
    if not browser.trusts_test_ca:
        unavailable("no certutil to make Chromium trust the test CA: apt-get install libnss3-tools")
    daemon = make_daemon()
    secure_url = daemon.http_url("wss", "/")  # https://localhost:PORT/
    assert secure_url.startswith("https://localhost:")
    sockets = []
    alice = new_tab("about:blank")
    alice.page.on("websocket", lambda socket: sockets.append(socket.url))
    response = alice.page.goto(secure_url)
    assert response.ok
    details = response.security_details()
    assert details and details["protocol"] in ("TLS 1.2", "TLS 1.3"), details
    sign_in(alice, "alice")
    assert sockets == [f"wss://localhost:{daemon.ports['wss']}/ws"]

    bob = new_tab(daemon.http_url("ws", "/"))
    sign_in(bob, "bob")
    box = bob.page.get_by_label("Message", exact=True)
    box.fill("over plain ws")
    box.press("Enter")
    box = alice.page.get_by_label("Message", exact=True)
    box.fill("over wss")
    box.press("Enter")
    for tab in (alice, bob):
        expect(tab.page.locator(".events:not(.pending) .message .text")).to_have_text(
            ["over plain ws", "over wss"]
        )
