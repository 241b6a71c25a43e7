"""Browser tests: chatd/static's pages in headless Chromium, against a real `twistd -n chatd`.

The daemon machinery (start, SIGTERM, logs, WebSocket clients) is tests/e2e/chatd_harness.py;
this file adds the browser: Debian's /usr/bin/chromium driven by Playwright (never a browser
that Playwright downloads). Without Playwright or Chromium the tests are skipped, unless the
environment variable CI is set: then they fail, so that CI cannot pass without running them.

Every page gets its own browser context (its own storage: two contexts are two people), and
records uncaught JavaScript errors and dialogs; a test that raised either fails at teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

E2E = Path(__file__).resolve().parents[1] / "e2e"
if str(E2E) not in sys.path:
    sys.path.insert(0, str(E2E))

from browser_helpers import CHROMIUM_ARGS, ROOT, TIMEOUT_MS, Tab, chromium_path, unavailable  # noqa: E402
from chatd_harness import TWISTD, Client, Daemon, write_ini  # noqa: E402

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
    """new_tab(url, width=1200, height=760): a fresh context (a new person) showing url."""
    tabs: list[Tab] = []

    def make(url: str, width: int = 1200, height: int = 760) -> Tab:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(TIMEOUT_MS)
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
            tab.context.close()
    assert not problems, "\n".join(problems)


# -- the daemon ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def client_ssl(ca) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


@pytest.fixture(scope="session")
def server_cert(ca, tmp_path_factory) -> tuple[Path, Path]:
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    directory = tmp_path_factory.mktemp("tls")
    chain, key = directory / "localhost.pem", directory / "localhost-key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return chain, key


@pytest.fixture(scope="session")
def installed_static(tmp_path_factory) -> Path:
    """The installed chatd/static; fails clearly when it lacks a file of the source tree.

    The venv holds a strict editable install (links to the files that existed when it was
    made): a file added to chatd/static since is 404 until chatd is installed again.
    """
    result = subprocess.run(
        [sys.executable, "-c", "import chatd; print(chatd.__file__)"],
        cwd=tmp_path_factory.mktemp("where"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"chatd is not installed in this venv:\n{result.stderr}"
    static = Path(result.stdout.strip()).parent / "static"
    missing = sorted(
        path.name
        for path in (ROOT / "chatd" / "static").iterdir()
        if not (static / path.name).exists()
    )
    if missing:
        pytest.fail(
            f"the chatd installed in {sys.prefix} lacks static/{', static/'.join(missing)}:"
            " reinstall it (make test does; or pip install --config-settings"
            " editable_mode=strict -e .)",
            pytrace=False,
        )
    return static


@pytest.fixture
def make_daemon(
    request, tmp_path, server_cert, client_ssl, installed_static
) -> Iterator[Callable[..., Daemon]]:
    """make_daemon(ws_port=0, **sections): a started daemon; sections are merged INI values."""
    daemons: list[Daemon] = []
    request.node.chatd_daemons = daemons

    def make(ws_port: int = 0, **overrides: dict[str, object]) -> Daemon:
        directory = tmp_path / f"chatd-{len(daemons) + 1}"
        directory.mkdir()
        certificate, key = server_cert
        sections: dict[str, dict[str, object]] = {
            "ws": {"interface": "127.0.0.1", "port": ws_port},
            "wss": {"interface": "127.0.0.1", "port": 0},
            "tls": {"certificate": certificate, "key": key},
            "transcripts": {"directory": directory / "transcripts", "rotate": "never"},
            "metrics": {"interface": "127.0.0.1", "port": 0},
        }
        for section, values in overrides.items():
            sections.setdefault(section, {}).update(values)
        config = write_ini(directory / "chatd.ini", sections)
        daemon = Daemon(directory, config, directory / "transcripts", client_ssl, TWISTD)
        daemons.append(daemon)
        return daemon.start()

    yield make
    for daemon in daemons:
        daemon.kill()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    daemons = getattr(item, "chatd_daemons", None)
    if report.failed and daemons:
        for number, daemon in enumerate(daemons, 1):
            report.sections.append((f"chatd daemon {number} log", daemon.log))
    return report


@pytest.fixture
def clients(client_ssl) -> Iterator[Callable[..., Client]]:
    """clients(url, name=None): a JSON WebSocket client (the harness's); closed at teardown."""
    opened: list[Client] = []

    def open_client(url: str, name: str | None = None) -> Client:
        client = Client(url, client_ssl, name)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        with contextlib.suppress(Exception):
            client.close()
