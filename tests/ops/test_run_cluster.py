"""etc/run-cluster.py (`make run-cluster`): Redis and two nodes that share rooms, stopped by
Ctrl-C, the nodes before Redis."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from chatd_harness import Client, wait_for
from redis_harness import REDIS_SERVER

SCRIPT = Path(__file__).resolve().parents[2] / "etc" / "run-cluster.py"


def free_port_pair() -> int:
    """A port free with the next one (the script gives node i its base port + i)."""
    for _attempt in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two consecutive free ports")


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture
def cluster(tmp_path):
    if not Path(REDIS_SERVER).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (Debian package redis-server)")
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    ws, wss, metrics = free_port_pair(), free_port_pair(), free_port_pair()
    output = (tmp_path / "output.log").open("wb")
    ports = ["--ws-port", ws, "--wss-port", wss, "--metrics-port", metrics]
    process = subprocess.Popen(
        [sys.executable, SCRIPT, "--dir", "cluster", *map(str, ports)],
        cwd=tmp_path,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: healthy(ws) and healthy(ws + 1), 60, "both nodes")
        yield process, ws
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output.close()


def test_two_nodes_share_a_room_and_ctrl_c_stops_all_three(cluster, tmp_path):
    process, ws = cluster
    alice = Client(f"ws://127.0.0.1:{ws}/ws", None)
    bob = Client(f"ws://127.0.0.1:{ws + 1}/ws", None)
    alice.hello("alice")
    alice.join("lobby")
    bob.hello("bob")
    bob.join("lobby")
    bob.send({"type": "say", "room": "lobby", "text": "from node2", "id": "m1"})
    ack, _before = bob.recv_until(lambda frame: frame["type"] == "ack")
    heard, _before = alice.recv_until(lambda frame: frame["type"] == "message")
    assert heard["seq"] == ack["seq"]
    # One transcript directory: the archiving node writes it under the nodes' directory.
    transcript = tmp_path / "var" / "transcripts" / "lobby.jsonl"
    wait_for(lambda: transcript.exists() and "from node2" in transcript.read_text(), 10, "archived")
    alice.close()
    bob.close()

    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0, (tmp_path / "output.log").read_text()
    assert not healthy(ws) and not healthy(ws + 1)
    redis_conf = (tmp_path / "cluster" / "redis.conf").read_text()
    assert {"appendonly yes", "appendfsync always", "maxmemory-policy noeviction"} <= set(
        redis_conf.splitlines()
    )
    port = int(redis_conf.split()[1])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    messages = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert [(m["seq"], m["text"]) for m in messages if m["type"] == "message"] == [
        (ack["seq"], "from node2")
    ]
