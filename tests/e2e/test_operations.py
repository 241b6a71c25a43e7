"""What operators rely on, against a real daemon: graceful SIGTERM while clients post,
/metrics that Prometheus can parse and that moves with traffic, JSON log lines, and
`chatd-transcript --follow` following a room across a rotation."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from chatd_harness import RECV_TIMEOUT, TWISTD, wait_for, write_ini
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

TRANSCRIPT_CLI = Path(sys.executable).parent / "chatd-transcript"


def test_sigterm_while_clients_post_loses_nothing(make_daemon, clients):
    daemon = make_daemon()
    posters = [clients(daemon.url(kind)) for kind in ("ws", "wss", "ws")]
    for number, client in enumerate(posters):
        client.hello(f"poster{number}")
        client.join("lobby", own_presence=False)
    acked: dict[str, int] = {}
    closes = []

    def post(client, number):
        try:
            for count in range(10_000):
                client.send(
                    {"type": "say", "room": "lobby", "text": f"m{count}", "id": f"{number}-{count}"}
                )
                while True:
                    frame = client.recv()
                    if frame["type"] == "ack":
                        acked[frame["id"]] = frame["seq"]
                        break
        except ConnectionClosed as closed:
            closes.append(closed.rcvd.code if closed.rcvd else None)

    threads = [threading.Thread(target=post, args=(c, n)) for n, c in enumerate(posters)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acked) >= 150, 20, "150 acknowledged messages")
    daemon.stop()  # SIGTERM; asserts exit status 0
    for thread in threads:
        thread.join(RECV_TIMEOUT)
    assert closes == [1001, 1001, 1001]

    stored = {e["id"]: e["seq"] for e in daemon.transcript("lobby") if e["type"] == "message"}
    assert {id: stored.get(id) for id in acked} == acked
    seqs = [event["seq"] for event in daemon.transcript("lobby")]
    assert seqs == list(range(1, len(seqs) + 1))

    daemon.start()
    last_seen = max(acked.values())
    epoch = daemon.transcript("lobby")[0]["epoch"]
    back = clients(daemon.url("wss"))
    back.hello("poster0")
    joined = back.join("lobby", since={"epoch": epoch, "seq": last_seen})
    assert joined["recovered"] is True
    assert [event["seq"] for event in joined["history"]] == list(
        range(last_seen + 1, joined["seq"] + 1)
    )


def scrape(daemon) -> dict[str, float]:
    url = f"http://127.0.0.1:{daemon.ports['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=RECV_TIMEOUT) as response:
        assert response.headers["content-type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_metrics_parse_and_move_with_traffic(make_daemon, clients):
    daemon = make_daemon()
    before = scrape(daemon)
    assert before["chatd_messages_received_total"] == 0
    alice, bob = clients(daemon.url("ws")), clients(daemon.url("wss"))
    alice.hello("alice")
    alice.join("lobby")
    bob.hello("bob")
    bob.join("lobby")
    for number in range(5):
        alice.say("lobby", f"hello {number}", f"a-{number}")
    alice.send({"type": "who", "room": "nowhere"})
    alice.expect(type="error", code="unknown_room")

    after = scrape(daemon)
    assert after["chatd_messages_received_total"] == 5
    assert after["chatd_connections{listener=ws}"] == 1
    assert after["chatd_connections{listener=wss}"] == 1
    assert after["chatd_handshakes_total{listener=ws}"] == 1
    assert after["chatd_rooms"] == 1
    assert after["chatd_room_members"] == 2
    assert after["chatd_errors_total{code=unknown_room}"] == 1
    # 2 presence joins + 5 messages committed; fan-out to 1 then 2, 2, ... members.
    assert after["chatd_events_committed_total"] == 7
    assert after["chatd_deliveries_total"] == 1 + 2 + 5 * 2
    assert after["chatd_transcript_write_seconds_count"] >= 1
    assert (
        after["chatd_delivered_payload_bytes_total"] > before["chatd_delivered_payload_bytes_total"]
    )
    # the daemon times its garbage collections (tests/unit/test_gcwatch.py: how)
    assert after["chatd_gc_longest_pause_seconds"] >= 0
    assert "objects from start-up frozen out of garbage collection" in daemon.log


def test_json_log_lines(tmp_path, server_cert):
    certificate, key = server_cert
    config = write_ini(
        tmp_path / "chatd.ini",
        {
            "ws": {"port": 0},
            "wss": {"port": 0},
            "tls": {"certificate": certificate, "key": key},
            "transcripts": {"directory": tmp_path / "transcripts"},
            "metrics": {"enabled": "no"},
        },
    )
    log = tmp_path / "log.jsonl"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(TWISTD), "--logger", "chatd.logs.json_to_stdout", "--nodaemon", "--pidfile=",
             "chatd", "--config", str(config)],
            cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_for(lambda: "wss listener ready" in log.read_text(), 15, "the listeners")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    ready = [r for r in records if r["message"].startswith("chatd wss listener ready")]
    assert ready and ready[0]["listener"] == "wss" and ready[0]["url"].startswith("wss://")
    assert all({"time", "level", "namespace", "message"} <= record.keys() for record in records)


def test_transcript_follow_prints_new_messages_across_a_rotation(make_daemon, clients):
    daemon = make_daemon(transcripts={"rotate_size": "2K"})
    alice = clients(daemon.url("ws"))
    alice.hello("alice")
    alice.join("lobby")
    alice.say("lobby", "before follow", "a-0")
    follower = subprocess.Popen(
        [str(TRANSCRIPT_CLI), "--config", str(daemon.config), "--follow", "--room", "lobby"],
        cwd=daemon.directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(follower.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("before follow" in line for line in lines), 10, "existing lines")
        texts = [f"after follow {number} " + "x" * 300 for number in range(12)]
        for number, text in enumerate(texts):
            alice.say("lobby", text, f"a-{number + 1}")
        assert len(daemon.transcript_files("lobby")) > 1, "the transcript did not rotate"
        wait_for(
            lambda: all(any(text in line for line in lines) for text in texts), 10, "every line"
        )
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(10)
    for text in texts:
        assert sum(text in line for line in lines) == 1, text
    shown = [line for line in lines if "<alice>" in line]
    assert "before follow" in shown[0] and texts[-1] in shown[-1]


DASHBOARD = Path(__file__).resolve().parents[2] / "etc" / "grafana" / "chatd-dashboard.json"


def test_every_metric_the_grafana_dashboard_queries_exists(make_daemon):
    """etc/grafana/chatd-dashboard.json, imported as is, shows no empty panel for want of a
    metric: each name in its queries is a metric family in /metrics (with the desk on)."""
    daemon = make_daemon(support={"enabled": "yes"})
    url = f"http://127.0.0.1:{daemon.ports['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=RECV_TIMEOUT) as response:
        families = {
            family.name for family in text_string_to_metric_families(response.read().decode())
        }
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    queried = {name for query in queries for name in re.findall(r"\bchatd_[a-z0-9_]+", query)}
    assert len(queried) >= 15
    missing = {
        name for name in queried if re.sub(r"_(total|bucket|sum|count)$", "", name) not in families
    }
    assert missing == set()
    inputs = {entry["name"] for entry in dashboard["__inputs"]}
    assert inputs == {"DS_PROMETHEUS"}  # Grafana's import asks for the data source


def test_a_second_sigterm_during_the_graceful_stop_is_no_error(make_daemon):
    """A service manager and a shell (or Ctrl-C twice) may both signal: the stop is one. A peer
    that never answers the closing handshake keeps the daemon stopping (for shutdown_timeout)
    while the second signal comes."""
    daemon = make_daemon(server={"shutdown_timeout": "3s"})
    silent = socket.create_connection(("127.0.0.1", daemon.ports["ws"]))
    silent.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert silent.recv(4096).startswith(b"HTTP/1.1 101")
    try:
        daemon.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "stopping gracefully" in daemon.log_of_last_start, 5, "the first stop")
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(RECV_TIMEOUT) == 0
    finally:
        silent.close()
    log = daemon.log_of_last_start
    assert "SIGTERM: already stopping" in log
    assert "Traceback" not in log and "ReactorNotRunning" not in log
