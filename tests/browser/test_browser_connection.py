"""connection.js's resume logic in Chromium, against a scripted server (no daemon).

The real daemon never sends an event twice nor loses an ack on a clean restart, so the pages'
tests (test_browser_chat.py) cannot show that the client would cope if it did. Here a fake
WebSocket class stands in for the browser's, and each test plays the server's part frame by
frame: duplicates, a history it cannot resume from, a connection lost before the ack.
"""

from __future__ import annotations

import pytest
from browser_helpers import ROOT

ORIGIN = "http://chatd.test"

# Replaces WebSocket and setTimeout in the page: sockets are driven by the test, and timers
# are recorded (window.timers) rather than run, so the test decides when a retry happens.
FAKES = """
window.sockets = [];
window.timers = [];
window.setTimeout = (callback, delay) => window.timers.push({callback, delay});
window.clearTimeout = () => {};
class FakeSocket {
  static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
  constructor(url) {
    Object.assign(this, {url, readyState: 0, sent: []});
    window.sockets.push(this);
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  close(code = 1000) { this.drop(code); }
  // what the server does
  open() { this.readyState = 1; this.onopen?.({}); }
  deliver(frame) { this.onmessage?.({data: JSON.stringify(frame)}); }
  drop(code = 1006, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({code, reason});
  }
}
window.WebSocket = FakeSocket;
"""

# Loads connection.js, records what it emits (window.seen), and defines helpers.
SETUP = """async () => {
  const { ChatConnection } = await import("/connection.js");
  window.seen = [];
  const conn = new ChatConnection({ name: "alice" }, "ws://chatd.test/ws");
  for (const type of ["reset", "events", "pending", "status", "fatal", "members"]) {
    conn.addEventListener(type, (event) => window.seen.push({ type, ...event.detail }));
  }
  window.conn = conn;
  window.last = () => window.sockets[window.sockets.length - 1];
  conn.start();
}"""


TS = "2026-11-24T21:18:26.491Z"


def event(seq: int, text: str | None = None, epoch: str = "e1", **fields) -> dict:
    """A message from bob (or with no text, bob's presence join) in the lobby."""
    base = {"room": "lobby", "epoch": epoch, "seq": seq, "ts": TS}
    if text is None:
        return {"type": "presence", **base, "user": "bob", "event": "join", **fields}
    return {"type": "message", **base, "from": "bob", "id": f"b{seq}", "text": text, **fields}


def joined(seq: int, history: list[dict], recovered: bool, epoch: str = "e1") -> dict:
    return {
        "type": "joined",
        "room": "lobby",
        "epoch": epoch,
        "seq": seq,
        "members": ["alice", "bob"],
        "recovered": recovered,
        "ref": None,
        "history": history,
    }


WELCOME = {
    "type": "welcome",
    "user": "alice",
    "name": "alice",
    "roles": [],
    "max_text_chars": 4000,
    "session": "s1",
    "resume": "s1.r1",
    "resumed": False,
    "secret": "u1",
}
PAGE = "<!doctype html><title>connection.js</title>"


class Script:
    """The page side of a scripted conversation with connection.js."""

    def __init__(self, page):
        self.page = page

    def server_opens(self) -> None:
        self.page.evaluate("last().open()")

    def server_sends(self, *frames: dict) -> None:
        for frame in frames:
            self.page.evaluate("frame => last().deliver(frame)", frame)

    def server_drops(self, code: int = 1006) -> None:
        self.page.evaluate("code => last().drop(code)", code)

    def sent(self) -> list[dict]:
        """What the client sent on the latest socket."""
        return self.page.evaluate("last().sent")

    def seen(self, type: str) -> list[dict]:
        return [item for item in self.page.evaluate("window.seen") if item["type"] == type]

    def seqs_shown(self) -> list[int]:
        """The seqs the page would show: its last reset, then every batch of new events."""
        shown: list[int] = []
        for item in self.page.evaluate("window.seen"):
            if item["type"] == "reset":
                shown = [e["seq"] for e in item["events"]]
            elif item["type"] == "events":
                shown += [e["seq"] for e in item["events"]]
        return shown

    def run_timers(self) -> list[int]:
        """Run the timers set so far (a reconnection, say); their delays, in ms."""
        return self.page.evaluate(
            "() => { const due = window.timers.splice(0); due.forEach(t => t.callback());"
            " return due.map(t => t.delay); }"
        )

    def welcome(self, **fields) -> None:
        self.server_opens()
        hello = self.sent()[-1]
        assert hello["type"] == "hello" and hello["name"] == "alice", hello
        self.server_sends({**WELCOME, **fields})

    def status(self) -> dict:
        return self.seen("status")[-1]


@pytest.fixture
def script(browser) -> Script:
    context = browser.new_context()
    static = ROOT / "chatd" / "static"

    def serve(route):
        path = route.request.url.removeprefix(ORIGIN).split("?")[0]
        if path == "/":
            route.fulfill(body=PAGE, content_type="text/html")
        elif (static / path.lstrip("/")).is_file():
            route.fulfill(path=static / path.lstrip("/"), content_type="text/javascript")
        else:
            route.fulfill(status=404)

    context.route(f"{ORIGIN}/**", serve)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.add_init_script(FAKES)
    page.goto(f"{ORIGIN}/")
    page.evaluate(SETUP)
    yield Script(page)
    context.close()
    assert not errors, errors


def test_events_are_shown_once_each_whatever_the_server_repeats(script):
    script.welcome()
    script.page.evaluate("conn.join('lobby')")
    assert script.sent()[-1] == {"type": "join", "room": "lobby", "id": script.sent()[-1]["id"]}
    script.server_sends(joined(3, [event(1), event(2, "one"), event(3, "two")], recovered=False))
    # A live event the history already held, then a new one, then that one again.
    script.server_sends(event(3, "two"), event(4, "three"), event(4, "three"))
    assert script.seqs_shown() == [1, 2, 3, 4]

    # Reconnect: the join carries `since` (the last seq shown); a recovered history that
    # overlaps what is shown adds only what is new.
    script.server_drops(1001)
    assert script.run_timers()
    script.welcome()
    join = script.sent()[-1]
    assert join["type"] == "join" and join["since"] == {"epoch": "e1", "seq": 4}
    script.server_sends(joined(6, [event(4, "three"), event(5, "four"), event(6, "five")], True))
    assert script.seqs_shown() == [1, 2, 3, 4, 5, 6]


def test_a_history_that_cannot_be_resumed_replaces_the_rooms_events(script):
    script.welcome()
    script.page.evaluate("conn.join('lobby')")
    script.server_sends(joined(5, [event(4, "a"), event(5, "b")], recovered=False))
    script.server_drops(1001)
    script.run_timers()
    script.welcome()
    assert script.sent()[-1]["since"] == {"epoch": "e1", "seq": 5}
    # The room's transcript was lost: a new epoch whose seqs start again from 1. Events of
    # the new epoch must not be mistaken for old ones (seq 2 < 5) and dropped.
    fresh = [event(1, "x", epoch="e2"), event(2, "y", epoch="e2")]
    script.server_sends(joined(2, fresh, recovered=False, epoch="e2"))
    script.server_sends(event(3, "z", epoch="e2"), event(4, "old epoch", epoch="e1"))
    assert script.seqs_shown() == [1, 2, 3]
    assert script.seen("reset")[-1]["events"][0]["text"] == "x"
    # The next resume asks for the new epoch.
    script.server_drops()
    script.run_timers()
    script.welcome()
    assert script.sent()[-1]["since"] == {"epoch": "e2", "seq": 3}


def test_an_unacknowledged_message_is_resent_with_the_same_id_after_reconnecting(script):
    script.welcome()
    script.page.evaluate("conn.join('lobby')")
    script.server_sends(joined(1, [event(1)], recovered=False))
    message_id = script.page.evaluate("conn.say('lobby', 'are you there?')")
    said = script.sent()[-1]
    assert said == {"type": "say", "room": "lobby", "text": "are you there?", "id": message_id}
    script.server_drops()  # before the ack
    assert script.page.evaluate("conn.pendingIn('lobby').length") == 1
    # Said while offline: queued, sent after the next welcome.
    offline_id = script.page.evaluate("conn.say('lobby', 'hello?')")
    script.run_timers()
    script.welcome()
    sent = script.sent()
    assert [frame["type"] for frame in sent] == ["hello", "join", "say", "say"]
    assert [(frame["id"], frame["text"]) for frame in sent[2:]] == [
        (message_id, "are you there?"),
        (offline_id, "hello?"),
    ]
    # The first had reached the server: it is in the resumed history (no ack for it on this
    # connection), which settles it; the second is posted and acknowledged.
    mine = event(2, "are you there?", **{"from": "alice", "id": message_id})
    script.server_sends(joined(2, [mine], recovered=True))
    assert script.page.evaluate("conn.pendingIn('lobby').map(s => s.id)") == [offline_id]
    script.server_sends(
        event(3, "hello?", **{"from": "alice", "id": offline_id}),
        {"type": "ack", "id": offline_id, "seq": 3},
    )
    assert script.page.evaluate("conn.pendingIn('lobby')") == []
    assert script.seqs_shown() == [1, 2, 3]


def test_reconnections_back_off_exponentially_with_jitter(script):
    delays = []
    for _attempt in range(6):
        script.server_drops()
        delays += script.run_timers()
    ceilings = [500, 1000, 2000, 4000, 8000, 15000]
    assert len(delays) == len(ceilings), delays
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling, (delays, ceilings)
    # Welcomed: the state says so, and a refusal of the hello stops it (no retry loop).
    script.welcome()
    assert script.seen("status")[-1]["state"] == "online"
    script.server_drops()
    script.run_timers()
    script.server_opens()
    refusal = {"type": "error", "code": "auth_failed", "message": "bad token", "ref": None}
    script.server_sends(refusal)
    assert script.seen("fatal") == [
        {"type": "fatal", "code": "auth_failed", "message": "bad token"}
    ]
    assert script.run_timers() == []


def test_hello_presents_the_users_secret_and_this_tabs_session_to_resume(script):
    """The user secret (open mode) is kept for every tab, the resume secret for this tab, and
    both go into every hello, so a reconnection takes the session over at once."""
    script.server_opens()
    assert script.sent() == [{"type": "hello", "name": "alice"}]  # nothing to present yet
    script.server_sends(WELCOME)
    page = script.page
    assert page.evaluate("localStorage.getItem('chatd.secret.alice')") == "u1"
    assert page.evaluate("sessionStorage.getItem('chatd.resume')") == "s1.r1"
    script.server_drops()
    script.run_timers()
    script.server_opens()
    assert script.sent()[-1] == {
        "type": "hello",
        "name": "alice",
        "secret": "u1",
        "resume": "s1.r1",
    }
    # Resumed: the server hands out a new resume secret, which the next hello presents.
    script.server_sends({**WELCOME, "resume": "s1.r2", "resumed": True})
    script.server_drops()
    script.run_timers()
    script.server_opens()
    assert script.sent()[-1]["resume"] == "s1.r2"


def test_a_replaced_session_stops_the_page_only_if_it_is_the_current_connection(script):
    script.welcome()
    script.server_drops()  # say, a network switch: the page reconnects and resumes
    script.run_timers()
    script.welcome(resumed=True)
    # The server closes the half-open old connection with 4000 ("replaced"): news about a
    # socket this page had given up on, which changes nothing.
    script.page.evaluate("window.sockets[0].onclose({code: 4000, reason: 'replaced'})")
    assert script.status()["state"] == "online"
    # The current connection replaced: another tab took the session over. No retry loop (each
    # would take it back); the page says why and may start a new session on request.
    script.server_drops(4000)
    assert script.status() == {
        "type": "status",
        "state": "stopped",
        "reason": "this session was taken over by another window or tab",
        "restartable": True,
    }
    assert script.run_timers() == []
    assert script.page.evaluate("sessionStorage.getItem('chatd.resume')") is None
    script.page.evaluate("conn.retryNow()")
    script.server_opens()
    assert script.sent()[-1] == {"type": "hello", "name": "alice", "secret": "u1"}


def token_connection(page, token: str) -> None:
    """Start window.tconn, a connection with a token; what it emits goes to window.tokenSeen."""
    page.evaluate(
        """async (token) => {
          const { ChatConnection } = await import("/connection.js");
          window.tokenSeen = [];
          window.tconn = new ChatConnection({ token }, "ws://chatd.test/ws");
          for (const type of ["status", "fatal"]) {
            tconn.addEventListener(type, (event) => tokenSeen.push({ type, ...event.detail }));
          }
          tconn.start();
        }""",
        token,
    )


def test_token_sessions_refresh_and_end_on_expiry_and_revocation(script):
    page = script.page
    token_connection(page, "t1")
    script.server_opens()
    assert script.sent() == [{"type": "hello", "token": "t1"}]
    script.server_sends({**WELCOME, "secret": None})
    # A fresh token: sent in a refresh now, and used by the next hello.
    page.evaluate("tconn.refresh('t2')")
    refresh = script.sent()[-1]
    assert refresh["type"] == "refresh" and refresh["token"] == "t2"
    assert page.evaluate("localStorage.getItem('chatd.secret.alice')") is None  # open mode only
    script.server_drops()
    script.run_timers()
    script.server_opens()
    assert script.sent()[-1] == {"type": "hello", "token": "t2", "resume": "s1.r1"}
    script.server_sends(WELCOME)
    # Expired (4001): the page must ask for a new sign-in; no retry.
    script.server_drops(4001)
    assert page.evaluate("tokenSeen.filter(e => e.type === 'fatal')") == [
        {
            "type": "fatal",
            "code": "token_expired",
            "message": "Your session has expired: please sign in again.",
        }
    ]
    assert script.run_timers() == []
    # Revoked (4003): stopped for good, and the page says so.
    token_connection(page, "t3")
    script.server_opens()
    script.server_sends(WELCOME)
    script.server_drops(4003)
    assert page.evaluate("tokenSeen.at(-1)") == {
        "type": "status",
        "state": "stopped",
        "reason": "your access was revoked",
        "restartable": False,
    }
    assert script.run_timers() == []
