"""Slow consumers against the real daemon: many raw-socket clients in one thread, each read
(or not) as the test decides, with the `websockets` library's sans-I/O client for the framing.

Budgets are small (the daemon's rule is the same at any size) so that the kernel's socket
buffers do not hide the daemon's own."""

from __future__ import annotations

import json
import re
import selectors
import socket
import time
from pathlib import Path

from chatd_harness import wait_for
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

BUDGET = 64 * 1024
GRACE = 2.0
SLOW_LIMITS = {
    "max_buffered_bytes": BUDGET,
    "slow_consumer_grace": f"{GRACE:g}s",
    "max_connections_per_ip": 1000,
    "max_text_chars": 10_000,
    "max_message_bytes": "64K",
}


class Peer:
    """One WebSocket connection on a plain socket."""

    def __init__(self, port: int, name: str, receive_buffer: int | None = None):
        self.name = name
        self.socket = socket.socket()
        if receive_buffer is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            # Segments as on a real network: with loopback's 64 KiB ones the daemon's kernel
            # sizes its send buffer to take megabytes for a peer that reads nothing.
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1200)
        self.socket.connect(("127.0.0.1", port))
        self.client = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"), max_size=None)
        self.client.send_request(self.client.connect())
        self._flush()
        self.socket.settimeout(10)
        while self.client.state is State.CONNECTING:
            self.client.receive_data(self.socket.recv(4096))
        [response] = self.client.events_received()
        assert response.status_code == 101, response
        self.socket.setblocking(False)
        self.frames: list[dict] = []
        self.closed = False  # the daemon closed the TCP connection
        self.close_code: int | None = None

    def _flush(self) -> None:
        for data in self.client.data_to_send():
            if data:
                self.socket.sendall(data)

    def send(self, frame: dict) -> None:
        self.client.send_text(json.dumps(frame).encode())
        self.socket.setblocking(True)
        try:
            self._flush()
        finally:
            self.socket.setblocking(False)

    def read(self, limit: int = 1 << 20) -> int:
        """Read what is there, up to `limit` bytes; returns how many."""
        got = 0
        while got < limit and not self.closed:
            try:
                chunk = self.socket.recv(min(limit - got, 1 << 16))
            except BlockingIOError:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                self.client.receive_eof()
                break
            got += len(chunk)
            self.client.receive_data(chunk)
        for event in self.client.events_received():
            opcode = getattr(event, "opcode", None)
            if opcode is Opcode.TEXT:
                self.frames.append(json.loads(event.data))
            elif opcode is Opcode.CLOSE:
                self.close_code = self.client.close_code
        return got

    def of_type(self, kind: str) -> list[dict]:
        return [frame for frame in self.frames if frame["type"] == kind]

    def close(self) -> None:
        self.socket.close()


def read_all(peers: list[Peer], seconds: float) -> None:
    """Read every peer's socket as data comes, for `seconds`."""
    selector = selectors.DefaultSelector()
    for peer in peers:
        if not peer.closed:
            selector.register(peer.socket, selectors.EVENT_READ, peer)
    deadline = time.monotonic() + seconds
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(remaining):
                key.data.read()
                if key.data.closed:
                    selector.unregister(key.fileobj)
    finally:
        selector.close()


def welcomed(port: int, name: str, room: str | None, **options) -> Peer:
    peer = Peer(port, name, **options)
    peer.send({"type": "hello", "name": name})
    if room is not None:
        peer.send({"type": "join", "room": room})
    return peer


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)[1])


def test_never_reading_members_of_a_busy_room_are_dropped_within_the_grace(make_daemon):
    daemon = make_daemon(limits=SLOW_LIMITS)
    port = daemon.ports["ws"]
    # 20 members that never read, with a small receive buffer, joined first ...
    stalled = [welcomed(port, f"stalled{n}", "busy", receive_buffer=4096) for n in range(20)]
    # ... and 180 that do.
    readers = [welcomed(port, f"reader{n}", "busy") for n in range(180)]
    sender = readers[0]
    read_all(readers, 0.5)
    wait_for(
        lambda: (read_all(readers, 0.05), all(r.of_type("joined") for r in readers))[1],
        10,
        "every reader to have joined",
    )

    text = "x" * 4000
    started = time.monotonic()
    dropped_at: dict[str, float] = {}
    number = 0
    while time.monotonic() - started < GRACE + 5 and len(dropped_at) < 20:
        for _ in range(2):  # 20 messages a second: 80 KB/s to every member, so that 16 times
            # the budget (the cap that drops at once) takes far longer than the grace
            sender.send({"type": "say", "room": "busy", "text": text, "id": f"m{number}"})
            number += 1
        if number % 20 == 0:  # the stalled ones send a frame every second, as keepalive
            for peer in stalled:
                if peer.name not in dropped_at:
                    peer.send({"type": "who", "room": "busy"})
        read_all(readers, 0.1)
        for peer in stalled:
            if peer.name not in dropped_at and daemon.log.count(f"({peer.name}) is not reading"):
                dropped_at[peer.name] = time.monotonic() - started
    assert len(dropped_at) == 20, (sorted(dropped_at), daemon.log[-2000:])
    # The kernel's buffers and the budget fill in about a second at this rate; then the grace
    # runs.
    assert max(dropped_at.values()) < GRACE + 3, dropped_at

    # Every reader got every message, in order, and none was dropped.
    sent = [f"m{n}" for n in range(number)]

    def all_delivered() -> bool:
        read_all(readers, 0.1)
        return all(len(r.of_type("message")) >= number for r in readers)

    wait_for(all_delivered, 15, "the readers to receive every message")
    for reader in readers:
        assert [m["id"] for m in reader.of_type("message")] == sent
        assert not reader.closed
    # The daemon closed the stalled ones' TCP connections (closing handshake timeout).
    for peer in stalled:
        wait_for(
            lambda peer=peer: peer.read(1 << 24) is not None and peer.closed,
            5,
            f"{peer.name}'s connection to close",
        )
    for peer in stalled + readers:
        peer.close()


def test_a_reader_with_a_tiny_receive_buffer_gets_a_1mb_history_page(make_daemon):
    daemon = make_daemon(limits=SLOW_LIMITS, history={"page_limit": 200})
    port = daemon.ports["ws"]
    writer = welcomed(port, "writer", "archive")
    for number in range(128):  # 128 x 8 KB: a 1 MB page, 16 times the budget
        writer.send(
            {
                "type": "say",
                "room": "archive",
                "text": f"{number:04}" + "y" * 8200,
                "id": f"h{number}",
            }
        )
        read_all([writer], 0.01)
    wait_for(
        lambda: (read_all([writer], 0.05), len(writer.of_type("ack")) == 128)[1],
        10,
        "the history to be written",
    )

    slow = welcomed(port, "slow", None, receive_buffer=4096)
    slow.send({"type": "history", "room": "archive", "limit": 128, "id": "page"})
    started = time.monotonic()
    while not slow.of_type("history") and time.monotonic() - started < 20:
        slow.read(16 * 1024)  # 16 KB every 20 ms: ~800 KB/s, a page in over a second
        time.sleep(0.02)
    [page] = slow.of_type("history")
    assert len(json.dumps(page)) > 1_000_000
    assert [event["id"] for event in page["events"]] == [f"h{n}" for n in range(128)]
    assert not slow.closed and slow.close_code is None
    assert "is not reading" not in daemon.log
    slow.send({"type": "who", "room": "archive"})
    wait_for(lambda: (slow.read(), slow.of_type("members"))[1], 5, "the connection to answer")
    writer.close()
    slow.close()


def test_memory_comes_back_after_slow_consumers_are_dropped(make_daemon):
    """Rounds of 20 clients that ask for large history pages and never read: RSS after they
    are dropped stays near where it started (the daemon runs as it always does, GC on)."""
    # log_connections: a line per closed connection tells when each round is gone.
    daemon = make_daemon(
        limits=SLOW_LIMITS, history={"page_limit": 200}, server={"log_connections": "yes"}
    )
    port = daemon.ports["ws"]
    writer = welcomed(port, "writer", "archive")
    for number in range(200):  # a 1.6 MB page
        writer.send({"type": "say", "room": "archive", "text": "z" * 8000, "id": f"h{number}"})
        read_all([writer], 0.005)
    wait_for(
        lambda: (read_all([writer], 0.05), len(writer.of_type("ack")) == 200)[1],
        10,
        "the history to be written",
    )
    # Two rounds first, so that the start is measured after the daemon's own warm-up (its
    # heap grows once to the size these rounds need), then three more.
    rss = []
    for round_number in range(5):
        stalled = [
            welcomed(port, f"r{round_number}s{n}", None, receive_buffer=4096) for n in range(20)
        ]
        for peer in stalled:  # 3.2 MB each: the second page is over 16 times the budget
            peer.send({"type": "history", "room": "archive", "limit": 200})
            peer.send({"type": "history", "room": "archive", "limit": 200})

        def dropped(round_number=round_number) -> bool:
            gone = re.findall(rf"\(r{round_number}s\d+\) disconnected", daemon.log)
            return len(gone) == 20

        wait_for(dropped, GRACE + 10, f"round {round_number}'s slow consumers to be dropped")
        for peer in stalled:
            peer.close()
        time.sleep(0.2)
        rss.append(rss_kib(daemon.process.pid))
    assert daemon.log.count("is not reading") == 100
    growth_mib = (max(rss[2:]) - rss[1]) / 1024
    assert growth_mib < 16, f"RSS after each round (KiB): {rss}"
    writer.close()
