"""Webhooks from a real `twistd -n chatd` to a real HTTP receiver in the test (http.server in a
thread), through restarts of both."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from chatd_harness import wait_for

SECRET = b"webhook-secret-0123456789abcdef"
TOLERANCE = 300


class Receiver:
    """An HTTP receiver that checks each delivery's signature and records its events."""

    def __init__(self, port: int = 0):
        self.events: list[dict] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()
        self.port = port
        self._server = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                timestamp = self.headers["x-chatd-timestamp"]
                expected = hmac.new(SECRET, f"{timestamp}.".encode() + body, hashlib.sha256)
                signatures = self.headers["x-chatd-signature"].split(",")
                fresh = abs(time.time() - int(timestamp)) <= TOLERANCE
                with receiver.lock:
                    if fresh and f"v1={expected.hexdigest()}" in signatures:
                        receiver.events.extend(json.loads(body)["events"])
                        status = 204
                    else:
                        receiver.bad_signatures += 1
                        status = 401
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def of_room(self, room: str, kind: str = "message") -> list[dict]:
        with self.lock:
            return [e for e in self.events if e["room"] == room and e["type"] == kind]


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def hook_daemon(make_daemon, tmp_path):
    secret = tmp_path / "webhook.secret"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)

    def make(receiver, events="message presence conversation unattended", **sections):
        return make_daemon(
            **{
                "webhook:crm": {
                    "url": f"http://127.0.0.1:{receiver.port}/hook",
                    "secret_file": secret,
                    "events": events,
                },
                "webhooks": {"retry_min": "100ms", "retry_max": "500ms", "batch_size": 7},
                **sections,
            }
        )

    return make


def test_the_receiver_gets_every_event_of_a_burst_in_order_and_signed(
    hook_daemon, receiver, clients
):
    daemon = hook_daemon(receiver)
    alice = clients(daemon.url("ws"))
    alice.hello("alice")
    alice.join("lobby")
    for n in range(40):
        alice.send({"type": "say", "room": "lobby", "text": f"m{n}", "id": f"m{n}"})
    wait_for(lambda: len(receiver.of_room("lobby")) >= 40, 10, "40 messages at the receiver")
    messages = receiver.of_room("lobby")
    assert [e["event"]["text"] for e in messages] == [f"m{n}" for n in range(40)]
    assert len({e["id"] for e in messages}) == 40
    assert (
        messages[0]["id"] == f"lobby:{messages[0]['event']['epoch']}:{messages[0]['event']['seq']}"
    )
    assert receiver.bad_signatures == 0
    presence = receiver.of_room("lobby", "presence")
    assert presence[0]["event"]["user"] == "alice"


def test_nothing_is_lost_across_a_dead_receiver_and_a_killed_daemon(hook_daemon, receiver, clients):
    daemon = hook_daemon(receiver, events="message")
    written: dict[str, list[str]] = {"lobby": [], "sales": []}

    def burst(tag: str, count: int):
        client = clients(daemon.url("ws"))
        client.hello(f"writer{tag}")
        for room in written:
            client.join(room)
        for n in range(count):
            for room in written:
                text = f"{tag}-{room}-{n}"
                client.say(room, text, id=text)
                written[room].append(text)
        client.close()

    burst("a", 10)
    wait_for(lambda: len(receiver.of_room("sales")) >= 10, 10, "the first burst")
    receiver.stop()
    burst("b", 15)  # the receiver is down: these wait, in the transcripts only
    time.sleep(0.3)  # a few failed deliveries and retries
    daemon.kill()  # SIGKILL: no chance to save anything at stop
    daemon.start()
    burst("c", 5)
    receiver.start()  # the same port again
    status = subprocess.run(
        [Path(sys.executable).parent / "chatd", "webhooks", "status", "-c", str(daemon.config)],
        cwd=daemon.directory,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "crm: http://127.0.0.1" in status.stdout and "lag:" in status.stdout
    for room, texts in written.items():
        wait_for(
            lambda room=room, texts=texts: (
                {e["event"]["text"] for e in receiver.of_room(room)} >= set(texts)
            ),
            20,
            f"every event of {room}",
        )
        got = receiver.of_room(room)
        # In order per room; a repeat only of an event already delivered, with the same id.
        firsts, seen = [], {}
        for event in got:
            if event["id"] in seen:
                assert seen[event["id"]] == event
                continue
            seen[event["id"]] = event
            firsts.append(event)
        assert [e["event"]["text"] for e in firsts] == texts
        seqs = [e["event"]["seq"] for e in firsts]
        assert seqs == sorted(seqs)
        transcript = [line for line in daemon.transcript(room) if line["type"] == "message"]
        assert [e["event"] for e in firsts] == transcript


def test_unattended_fires_when_no_agent_answers_and_not_when_one_does(
    hook_daemon, receiver, clients
):
    daemon = hook_daemon(
        receiver,
        events="unattended conversation",
        support={"enabled": "yes", "trial_agents": "ann", "unattended_after": "1s"},
    )
    carol = clients(daemon.url("ws"))
    carol.hello("carol")
    carol.join("support-carol")
    carol.say("support-carol", "hello? anyone?", id="c1")
    dave = clients(daemon.url("ws"))
    dave.hello("dave")
    dave.join("support-dave")
    dave.say("support-dave", "hi", id="d1")
    ann = clients(daemon.url("ws"))
    ann.hello("ann")
    ann.join("support-dave")
    ann.say("support-dave", "hello dave, how can I help?", id="a1")
    wait_for(lambda: receiver.of_room("support-carol", "unattended"), 10, "carol's unattended")
    time.sleep(1.5)  # past dave's deadline too
    fired = receiver.of_room("support-carol", "unattended")
    assert len(fired) == 1 and fired[0]["event"]["customer"] == "carol"
    assert receiver.of_room("support-dave", "unattended") == []


def test_in_redis_mode_the_archiving_node_sends_every_event_and_another_takes_over(
    make_node, receiver, clients, tmp_path
):
    secret = tmp_path / "webhook.secret"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)
    hooks = {
        "webhook:crm": {
            "url": f"http://127.0.0.1:{receiver.port}/hook",
            "secret_file": secret,
            "events": "message",
        },
        "webhooks": {"retry_min": "100ms", "retry_max": "500ms", "state_directory": tmp_path},
    }
    a = make_node("a", **hooks)  # a takes the archiver lease: it sends
    b = make_node("b", **hooks)
    writers = [clients(node.url("ws")) for node in (a, b)]
    for n, writer in enumerate(writers):
        writer.hello(f"w{n}")
        writer.join("lobby", own_presence=False)
    sent = []
    for n in range(10):
        for w, writer in enumerate(writers):
            writer.send({"type": "say", "room": "lobby", "text": f"{w}-{n}", "id": f"{w}-{n}"})
            sent.append(f"{w}-{n}")
    wait_for(lambda: len(receiver.of_room("lobby")) >= 20, 15, "20 messages at the receiver")
    first = receiver.of_room("lobby")
    assert sorted(e["event"]["text"] for e in first) == sorted(sent)  # each once, from one node
    assert [e["event"]["seq"] for e in first] == sorted(e["event"]["seq"] for e in first)

    a.kill()  # b takes the lease over, and the sending with it
    for n in range(10, 15):
        writers[1].send({"type": "say", "room": "lobby", "text": f"1-{n}", "id": f"1-{n}"})
        writers[1].recv_until(lambda f, n=n: f["type"] == "ack" and f["id"] == f"1-{n}")
        sent.append(f"1-{n}")
    wait_for(lambda: len({e["id"] for e in receiver.of_room("lobby")}) >= 25, 20, "b's sends")
    delivered = receiver.of_room("lobby")
    assert {e["event"]["text"] for e in delivered} == set(sent)  # at least once: none lost
    assert receiver.bad_signatures == 0
