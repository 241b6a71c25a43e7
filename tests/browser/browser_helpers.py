"""What the browser tests share besides fixtures (conftest.py): paths, the tab, small steps.

A module of its own, named so as not to clash with other test directories' helpers (tests/ has
no __init__.py files, so test directories share sys.path); test modules import from it.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Where the tests put pictures of the pages: a temporary directory, so that a test run does not
# rewrite tracked files. To refresh the pictures in the docs, run the tests with
# CHATD_SCREENSHOTS=docs/screenshots (and look at them before committing).
SCREENSHOTS = Path(
    os.environ.get("CHATD_SCREENSHOTS") or Path(tempfile.gettempdir()) / "chatd-screenshots"
)
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000  # Playwright's waits (actions and expect) give up after this long


def unavailable(reason: str):
    """Skip, or fail under CI: a CI run must not pass without running the browser tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the browser tests must run)", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str | None:
    """$CHATD_CHROMIUM, else Debian's chromium on PATH or in /usr/bin."""
    candidate = os.environ.get("CHATD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return candidate if os.access(candidate, os.X_OK) else None


def free_port() -> int:
    """A port that was free a moment ago (for a daemon that must come back on the same one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Tab:
    """A page in a browser context of its own, and what went wrong in it."""

    page: object
    errors: list[str] = field(default_factory=list)  # uncaught exceptions
    dialogs: list[str] = field(default_factory=list)  # alert/confirm/prompt messages

    @property
    def context(self):
        return self.page.context


def sign_in(tab: Tab, name: str) -> None:
    """Fill the name prompt and wait for the connection to be up."""
    box = tab.page.locator("#login [name=name]")
    box.fill(name)
    box.press("Enter")
    tab.page.locator("#status[data-state=online]").wait_for()


def open_page(new_tab, daemon, path: str, name: str, **size) -> Tab:
    """A new tab on the daemon's page at `path` (over ws's HTTP), signed in as `name`."""
    tab = new_tab(daemon.http_url("ws", path), **size)
    sign_in(tab, name)
    return tab


def send(tab: Tab, text: str, label: str) -> None:
    """Type `text` into the text box labelled `label` and press Enter."""
    box = tab.page.get_by_label(label, exact=True)
    box.fill(text)
    box.press("Enter")


def conversation(tab: Tab):
    """The texts of the acknowledged messages in the conversation shown."""
    return tab.page.locator(".events:not(.pending) .message .text")


def desk_entry(tab: Tab, customer: str):
    """The agent desk's queue entry (its <li>) of a customer."""
    return tab.page.locator(".queue-entry").filter(
        has=tab.page.locator(".customer").get_by_text(customer, exact=True)
    )


def screenshot(tab: Tab, name: str) -> Path:
    """Save a picture of the page as SCREENSHOTS/NAME.png (for the docs, see SCREENSHOTS)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    tab.page.screenshot(path=str(path))
    return path
