"""`[limits] compression` through a real daemon, with the `websockets` library's own
permessage-deflate (it offers it by default, as browsers do)."""

from __future__ import annotations

import os

from websockets.extensions.permessage_deflate import PerMessageDeflate

from chatd.outgoing import CLIENT_WINDOW_BITS


def deflate_of(client) -> PerMessageDeflate | None:
    extensions = client.ws.protocol.extensions
    assert len(extensions) <= 1
    return extensions[0] if extensions else None


def test_compressed_and_plain_clients_share_a_room_on_both_listeners(make_daemon, clients):
    daemon = make_daemon(limits={"compression": "yes"})
    zipped = clients(daemon.url("wss"))
    plain = clients(daemon.url("ws"), compression=None)
    extension = deflate_of(zipped)
    assert extension is not None
    # the client was told to compress each message on its own, in a 1 KiB window
    assert extension.local_no_context_takeover is True
    assert extension.local_max_window_bits == CLIENT_WINDOW_BITS
    assert deflate_of(plain) is None

    zipped.hello("alice")
    zipped.join("lobby")
    plain.hello("bob")
    plain.join("lobby")
    zipped.next_event()  # bob's presence
    texts = [os.urandom(400).hex() for _ in range(3)] + ["a" * 2000]
    for number, text in enumerate(texts):
        sender, other = (zipped, plain) if number % 2 else (plain, zipped)
        message, _ack = sender.say("lobby", text, f"m-{number}")
        assert other.next_event() == message

    # a later member's history, inflated by websockets, is the transcript's
    late = clients(daemon.url("ws"))
    late.hello("carol")
    joined = late.join("lobby")
    assert deflate_of(late) is not None
    said = [event["text"] for event in joined["history"] if event["type"] == "message"]
    assert said == texts
    stored = [line["text"] for line in daemon.transcript("lobby") if line["type"] == "message"]
    assert stored == texts


def test_without_compression_an_offer_is_declined(make_daemon, clients):
    daemon = make_daemon()
    client = clients(daemon.url("ws"))
    assert deflate_of(client) is None
    client.hello("alice")
    assert client.join("lobby")["type"] == "joined"
