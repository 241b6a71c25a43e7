"""Browser tests: chatd/static's pages in headless Chromium, against a real `twistd -n chatd`.

The daemon and its clients come from tests/conftest.py and tests/chatd_harness.py; this file
adds the browser: Debian's /usr/bin/chromium driven by Playwright (never a browser
that Playwright downloads). Without Playwright or Chromium the tests are skipped, unless the
environment variable CI is set: then they fail, so that CI cannot pass without running them.

Every page gets its own browser context (its own storage: two contexts are two people), and
records uncaught JavaScript errors and dialogs; a test that raised either fails at teardown.
"""

from __future__ import annotations

import contextlib
import html
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import trustme
from browser_helpers import CHROMIUM_ARGS, TIMEOUT_MS, Tab, chromium_path, unavailable

# -- the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sync_api():
    """playwright.sync_api, or a skip (a failure under CI) saying how to install it."""
    try:
        from playwright import sync_api
    except ImportError:
        unavailable("Playwright is not installed: pip install playwright (no `playwright install`)")
    return sync_api


@pytest.fixture(scope="session")
def expect(sync_api):
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    return sync_api.expect


@pytest.fixture(scope="session")
def browser(sync_api, tmp_path_factory, ca):
    """Chromium, trusting the test CA (when certutil is there to tell it so).

    Chromium on Linux takes user-added trust anchors from the NSS database in
    $HOME/.pki/nssdb: the browser gets a HOME of its own whose database holds the session's
    test CA, as a person would import their company's CA. `browser.trusts_test_ca` says
    whether that worked (certutil comes with Debian's libnss3-tools).
    """
    executable = chromium_path()
    if executable is None:
        unavailable(
            "no Chromium ($CHATD_CHROMIUM, chromium on PATH, /usr/bin/chromium):"
            " apt-get install chromium"
        )
    home = tmp_path_factory.mktemp("chromium-home")
    trusts_test_ca = trust_in_nss(ca, home / ".pki" / "nssdb")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=CHROMIUM_ARGS,
            env={**os.environ, "HOME": str(home)},
            timeout=30_000,
        )
        browser.trusts_test_ca = trusts_test_ca
        yield browser
        browser.close()


def trust_in_nss(ca: trustme.CA, database: Path) -> bool:
    """Create an NSS database that trusts `ca` for servers; False without certutil."""
    certutil = shutil.which("certutil")
    if certutil is None:
        return False
    database.mkdir(parents=True)
    pem = database.parent / "chatd-test-ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    where = f"sql:{database}"
    subprocess.run([certutil, "-N", "-d", where, "--empty-password"], check=True)
    subprocess.run(
        [certutil, "-A", "-d", where, "-n", "chatd test CA", "-t", "C,,", "-i", str(pem)],
        check=True,
    )
    return True


@pytest.fixture
def new_tab(browser) -> Iterator[Callable[..., Tab]]:
    """new_tab(url, width=1200, height=760): a fresh context (a new person) showing url;
    new_tab(url, beside=tab): another tab of the same person (the same context: the same
    localStorage, its own sessionStorage). The browser speaks English (the pages' texts that
    the tests look for) unless locale says otherwise: locale="zh-CN", a Chinese browser."""
    tabs: list[Tab] = []

    def make(
        url: str,
        width: int = 1200,
        height: int = 760,
        beside: Tab | None = None,
        locale: str = "en-US",
    ) -> Tab:
        if beside is None:
            context = browser.new_context(
                viewport={"width": width, "height": height}, locale=locale
            )
            context.set_default_timeout(TIMEOUT_MS)
        else:
            context = beside.context
        tab = Tab(context.new_page())
        tab.page.on("pageerror", lambda error: tab.errors.append(str(error)))

        def on_dialog(dialog):
            tab.dialogs.append(dialog.message)
            dialog.dismiss()

        tab.page.on("dialog", on_dialog)
        tabs.append(tab)
        tab.page.goto(url)
        return tab

    yield make
    problems = []
    for tab in tabs:
        problems += [f"uncaught error in {tab.page.url}: {error}" for error in tab.errors]
        problems += [f"dialog in {tab.page.url}: {message!r}" for message in tab.dialogs]
        with contextlib.suppress(Exception):
            tab.context.close()  # a context of several tabs: closed once, then a no-op
    assert not problems, "\n".join(problems)


# -- a site of another origin that embeds the widget --------------------------------------------


class HostPage(http.server.BaseHTTPRequestHandler):
    """Any path: a shop's page that includes the daemon's widget, as a site would, with the
    script tag's `attributes` (data-title, data-lang, ...)."""

    widget_url = ""
    attributes: ClassVar[dict[str, str]] = {}  # each shop() page class gets its own

    def do_GET(self):
        options = "".join(
            f" {name}='{html.escape(value, quote=True)}'" for name, value in self.attributes.items()
        )
        body = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Shop</title>"
            "</head><body><h1>Tea &amp; teapots</h1><p>Green, white and oolong teas, shipped"
            f" within two days.</p><script src='{self.widget_url}'{options} defer></script>"
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
def shop() -> Iterator[Callable[[], tuple[str, type[HostPage]]]]:
    """shop(): a site's web server on a port of its own (http://localhost:PORT: another origin
    and another site than the daemon's http://127.0.0.1); returns its origin and its page's
    class, whose `widget_url` and `attributes` say what its page includes."""
    servers = []

    def start():
        page = type("Page", (HostPage,), {"attributes": {}})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), page)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://localhost:{server.server_address[1]}", page

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
