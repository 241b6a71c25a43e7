"""Crash safety: what was acknowledged survives SIGKILL, and retries after a restart de-dupe."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from chatd_harness import RECV_TIMEOUT, assert_contiguous, wait_for
from websockets.exceptions import ConnectionClosed

SENDERS = 3
MAX_PER_SENDER = 250  # 3 x 250 + presence events stay under memory_events (1000)
WINDOW = 16  # says in flight per sender
KILL_AFTER_ACKS = 120


class Sender:
    """Pipelines says on one connection (at most WINDOW unacknowledged) until it dies."""

    def __init__(self, client, room: str):
        self.client = client
        self.name = client.name
        self.room = room
        self.sent: list[str] = []
        self.acks: dict[str, int] = {}
        self.errors: list[dict] = []
        self._window = threading.Semaphore(WINDOW)
        self._dead = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._receive, daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(RECV_TIMEOUT)
            assert not thread.is_alive(), f"{self.name}: {thread} is stuck"

    def _send(self) -> None:
        for number in range(MAX_PER_SENDER):
            while not self._window.acquire(timeout=0.1):
                if self._dead.is_set():
                    return
            client_id = f"{self.name}-{number}"
            frame = {
                "type": "say",
                "room": self.room,
                "text": f"storm {client_id}",
                "id": client_id,
            }
            try:
                self.client.ws.send(json.dumps(frame))
            except (ConnectionClosed, OSError):
                return
            self.sent.append(client_id)

    def _receive(self) -> None:
        try:
            while True:
                frame = json.loads(self.client.ws.recv(timeout=2 * RECV_TIMEOUT))
                if frame["type"] == "ack":
                    self.acks[frame["id"]] = frame["seq"]
                    self._window.release()
                elif frame["type"] == "error":
                    self.errors.append(frame)
        except (ConnectionClosed, OSError, TimeoutError):
            pass
        finally:
            self._dead.set()


def messages_by_sender(transcript: list[dict]) -> dict[tuple[str, str], int]:
    keys = [(event["from"], event["id"]) for event in transcript if event["type"] == "message"]
    duplicates = [key for key, count in Counter(keys).items() if count > 1]
    assert not duplicates, f"stored more than once: {duplicates}"
    return {
        (event["from"], event["id"]): event["seq"]
        for event in transcript
        if event["type"] == "message"
    }


@pytest.mark.parametrize("fsync", ["no", "batch"])
def test_acknowledged_messages_survive_sigkill(make_daemon, clients, fsync):
    daemon = make_daemon(transcripts={"fsync": fsync})
    url = daemon.url("ws")

    observer = clients(url)
    observer.hello("observer")
    epoch = observer.join("storm")["epoch"]
    seq_before = observer.received[-1]["seq"]
    observer.close()

    senders = []
    for number in range(SENDERS):
        client = clients(daemon.url("wss" if number % 2 else "ws"))
        client.hello(f"s{number}")
        client.join("storm", own_presence=False)
        senders.append(Sender(client, "storm"))
    for sender in senders:
        sender.start()
    wait_for(
        lambda: sum(len(sender.acks) for sender in senders) >= KILL_AFTER_ACKS,
        RECV_TIMEOUT,
        f"{KILL_AFTER_ACKS} acks",
        interval=0.002,
    )
    daemon.kill()
    for sender in senders:
        sender.join()
        assert sender.errors == [], sender.errors
    acked = {(s.name, client_id): seq for s in senders for client_id, seq in s.acks.items()}
    assert len(acked) >= KILL_AFTER_ACKS
    assert all(len(s.sent) < MAX_PER_SENDER for s in senders), "the kill came too late"

    daemon.restart()
    transcript = daemon.transcript("storm")
    assert_contiguous(transcript, first=1)
    assert all(event["epoch"] == epoch for event in transcript)
    stored = messages_by_sender(transcript)
    # Every acknowledged message is stored, once, with the seq its ack gave.
    assert {key: stored.get(key) for key in acked} == acked
    for sender in senders:
        # A connection's says are stored in the order sent: a prefix of what was sent.
        mine = [key[1] for key in sorted(stored, key=stored.get) if key[0] == sender.name]
        assert mine == sender.sent[: len(mine)]

    # A client that saw up to seq_before resumes and gets every event since, acked or not.
    observer = clients(daemon.url("ws"))
    observer.hello("observer")
    joined = observer.join("storm", since={"epoch": epoch, "seq": seq_before})
    assert (joined["epoch"], joined["recovered"], joined["seq"]) == (epoch, True, len(transcript))
    assert joined["history"] == transcript[seq_before:]
    last_seq = observer.received[-1]["seq"]  # the observer's presence

    # The senders retry everything they have no ack for: stored ones are acked with their
    # original seq and not posted again; the rest are posted now.
    for sender in senders:
        client = clients(daemon.url("ws"))
        client.hello(sender.name)
        client.join("storm", own_presence=False)
        unacked = [client_id for client_id in sender.sent if client_id not in sender.acks]
        for client_id in unacked:
            text = f"storm {client_id}"
            client.send({"type": "say", "room": "storm", "text": text, "id": client_id})
        for client_id in unacked:
            ack, _events = client.recv_until(lambda frame: frame["type"] == "ack")
            assert ack["id"] == client_id
            original = stored.get((sender.name, client_id))
            if original is not None:
                assert ack["seq"] == original, ack
            else:
                assert ack["seq"] > last_seq, ack
                last_seq = ack["seq"]
    final = daemon.transcript("storm")
    assert_contiguous(final, first=1)
    assert final[: len(transcript)] == transcript
    everything = messages_by_sender(final)
    assert sorted(everything) == sorted((s.name, i) for s in senders for i in s.sent)
    retried = sum(len(s.sent) - len(s.acks) for s in senders)
    stored_unacked = sum(1 for key in stored if key not in acked)
    print(f"fsync={fsync}: {len(acked)} acked, {retried} retried, {stored_unacked} stored unacked")


def test_a_retry_after_a_crash_is_acked_with_the_original_seq(daemon, clients):
    alice = clients(daemon.url("ws"))
    alice.hello("alice")
    epoch = alice.join("lobby")["epoch"]
    alice.send({"type": "say", "room": "lobby", "text": "did it arrive?", "id": "r-1"})
    message = alice.expect(type="message", id="r-1")  # stored; say the ack never came
    daemon.kill()
    # And the crash tore the line of a batch it was writing, never acknowledged.
    with daemon.transcript_path("lobby").open("ab") as transcript:
        transcript.write(b'{"type":"message","room":"lobby","epoch":"' + epoch.encode() + b'","se')

    daemon.restart()
    stored_message = alice.raw[-1]
    alice = clients(daemon.url("wss"))
    alice.hello("alice")
    # Rooms load on demand: the torn line is cut when the room is loaded, by this join.
    joined = alice.join("lobby", since={"epoch": epoch, "seq": message["seq"]})
    assert (joined["recovered"], joined["seq"], joined["history"]) == (True, message["seq"], [])
    assert "torn" in daemon.log_of_last_start
    lines = daemon.transcript_lines("lobby")  # every line whole, the torn bytes gone
    assert lines[message["seq"] - 1] == stored_message
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, message["seq"] + 2))
    alice.send({"type": "say", "room": "lobby", "text": "did it arrive?", "id": "r-1"})
    assert alice.recv() == {"type": "ack", "id": "r-1", "seq": message["seq"]}
    new, _ack = alice.say("lobby", "and this one is new", "r-2")
    assert new["seq"] == message["seq"] + 2  # after alice's presence
    ids = [event.get("id") for event in daemon.transcript("lobby")]
    assert (ids.count("r-1"), ids.count("r-2")) == (1, 1)


def test_sigkill_mid_stream_leaves_no_torn_line_after_restart(daemon, clients):
    """Many rooms written at once, killed, restarted: every transcript ends on a line."""
    alice = clients(daemon.url("ws"))
    alice.hello("alice")
    rooms = [f"room-{number}" for number in range(5)]
    for room in rooms:
        alice.join(room)
    for number in range(200):
        room = rooms[number % len(rooms)]
        alice.send({"type": "say", "room": room, "text": "x" * 500, "id": f"k-{number}"})
    # Let some through: where exactly the kill lands does not matter.
    alice.recv_until(lambda frame: frame["type"] == "ack")
    daemon.kill()
    daemon.restart()
    for room in rooms:
        transcript = daemon.transcript(room)
        assert_contiguous(transcript, first=1)
        assert {event["room"] for event in transcript} == {room}
