"""permessage-deflate (`[limits] compression`): frames checked with zlib itself, and a real
Autobahn client negotiating with the real listener in memory (conftest's `ChatServer`)."""

import json
import os
import struct
import zlib

import pytest
from autobahn.websocket.compress import PerMessageDeflateOffer

from chatd.outgoing import CLIENT_WINDOW_BITS, Deflater, Outgoing, frame, prepare_frames

TAIL = b"\x00\x00\xff\xff"


def parse(data: bytes) -> list[tuple[int, bytes]]:
    """(first byte, payload) of each unmasked frame in `data`, by RFC 6455 5.2."""
    frames = []
    while data:
        first, size = data[0], data[1] & 0x7F
        assert data[1] & 0x80 == 0, "a server never masks"
        offset = 2
        if size == 126:
            (size,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif size == 127:
            (size,) = struct.unpack("!Q", data[2:10])
            offset = 10
        frames.append((first, data[offset : offset + size]))
        data = data[offset + size :]
    return frames


def inflate(payload: bytes, window_bits: int = 15) -> bytes:
    """What a receiver with a fresh inflater and this window makes of one message."""
    return zlib.decompressobj(-window_bits).decompress(payload + TAIL)


def distinct_texts(count: int, size: int) -> list[str]:
    return [os.urandom(size // 2).hex() for _ in range(count)]


class CountingDeflater(Deflater):
    def __init__(self):
        super().__init__()
        self.compressed = 0

    def frame(self, payload, window_bits, opcode=1):
        self.compressed += 1
        return super().frame(payload, window_bits, opcode)


# -- framing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_a_frame_carries_its_length_in_the_right_form(size):
    payload = b"x" * size
    [(first, body)] = parse(frame(payload))
    assert first == 0x81  # FIN, text, no RSV bit
    assert body == payload
    header = len(frame(payload)) - size
    assert header == (2 if size < 126 else 4 if size < 65536 else 10)


def test_plain_frames_are_one_text_frame_per_payload():
    payloads = [b'{"a":1}', b"y" * 300]
    assert parse(prepare_frames(payloads)) == [(0x81, payloads[0]), (0x81, payloads[1])]


def test_every_compressed_message_inflates_on_its_own():
    deflater = Deflater()
    text = json.dumps({"type": "message", "text": "hello " * 50}).encode()
    other = json.dumps({"type": "message", "text": "other " * 50}).encode()
    for payload in (text, other, text):  # the third repeats the first: no reference back
        [(first, body)] = parse(deflater.frame(payload, 15))
        assert first == 0xC1  # FIN, RSV1 (compressed), text
        assert len(body) < len(payload)
        assert inflate(body) == payload


def test_a_message_that_would_not_shrink_goes_uncompressed():
    payload = b'{"type":"ack","id":"7","seq":3}'
    assert parse(Deflater().frame(payload, 15)) == [(0x81, payload)]


def test_the_window_a_client_asked_for_is_kept():
    """Random text repeated 701 bytes back: a 15-bit window refers back to it, a 9-bit one
    (512 bytes) cannot reach it, so the repeat costs its whole length again."""
    deflater = Deflater()
    block = os.urandom(350).hex().encode()
    payload = block + b"," + block
    [(_, wide)] = parse(deflater.frame(payload, 15))
    [(first, narrow)] = parse(deflater.frame(payload, 9))
    assert first == 0xC1
    assert inflate(narrow, 9) == payload
    assert len(wide) < len(block) < len(narrow)


def test_outgoing_frames_each_encoding_once_whoever_asks():
    deflater = CountingDeflater()
    lines = [json.dumps({"text": text}).encode() for text in distinct_texts(3, 200)]
    outgoing = Outgoing(lines, deflater)
    assert outgoing.framed(None) == prepare_frames(lines)
    first = outgoing.framed(15)
    assert outgoing.framed(15) is first
    assert deflater.compressed == 3
    outgoing.framed(12)
    assert deflater.compressed == 6
    assert [inflate(body) for _, body in parse(first)] == lines


# -- negotiation and fan-out through the listener ---------------------------------------------


@pytest.fixture
def deflating(make_server):
    return make_server(deflater=CountingDeflater())


def extension_of(client):
    [extension] = client.websocket_extensions_in_use
    return extension


def test_with_compression_on_the_offer_is_taken_without_client_context_takeover(deflating):
    client = deflating.connect()
    extension = extension_of(client)
    # what the server told the client: compress each message on its own, in a small window
    assert extension.client_no_context_takeover is True
    assert extension.client_max_window_bits == CLIENT_WINDOW_BITS
    assert client.server_side.window_bits == 15


def test_a_client_that_offers_nothing_gets_plain_frames_from_the_same_listener(deflating):
    client = deflating.connect(offers=[])
    assert client.websocket_extensions_in_use == []
    assert client.server_side.window_bits is None


def test_compressed_and_plain_members_of_one_room_read_the_same_events(deflating):
    texts = distinct_texts(1, 100)
    zipped = deflating.joined("alice")
    plain = deflating.joined("bob", offers=[])
    wire_before = zipped.trafficStats.incomingOctetsWebSocketLevel
    app_before = zipped.trafficStats.incomingOctetsAppLevel
    plain.send_json({"type": "say", "room": "lobby", "text": texts[0], "id": "1"})
    deflating.flush()
    zipped.send_json({"type": "say", "room": "lobby", "text": "x" * 100, "id": "2"})
    deflating.flush()
    for client in (zipped, plain):
        assert [m["text"] for m in client.of_type("message")] == [texts[0], "x" * 100]
    # what alice's socket carried was smaller than what she read
    wire = zipped.trafficStats.incomingOctetsWebSocketLevel - wire_before
    app = zipped.trafficStats.incomingOctetsAppLevel - app_before
    assert wire < app
    assert plain.trafficStats.incomingOctetsWebSocketLevel == (
        plain.trafficStats.incomingOctetsAppLevel
    )


def test_a_room_event_is_compressed_once_for_all_its_compressed_members(deflating):
    members = [deflating.joined(f"user{i}") for i in range(5)]
    deflater = deflating.factory.context.deflater
    before = deflater.compressed
    members[0].send_json({"type": "say", "room": "lobby", "text": "y" * 100, "id": "1"})
    deflating.flush()
    for member in members:
        assert member.of_type("message")[-1]["text"] == "y" * 100
    # the event, once; and the sender's ack, which rides in the same write, once
    assert deflater.compressed - before == 2


def test_a_client_asking_for_a_small_server_window_gets_frames_it_can_inflate(deflating):
    """A `joined` whose history repeats itself 500+ bytes back, for a client that asked for
    a 9-bit window (the Deflater test shows that window reaches zlib)."""
    writer = deflating.joined("writer", offers=[])
    texts = distinct_texts(5, 100)
    for round_ in range(2):
        for index, text in enumerate(texts):
            writer.send_json(
                {"type": "say", "room": "lobby", "text": text, "id": f"{round_}-{index}"}
            )
            deflating.flush()
    reader = deflating.joined("reader", offers=[PerMessageDeflateOffer(request_max_window_bits=9)])
    assert reader.server_side.window_bits == 9
    assert reader.close_code is None
    [joined] = reader.of_type("joined")
    assert [event["text"] for event in joined["history"] if event["type"] == "message"] == (
        texts * 2
    )


def test_a_client_may_send_compressed_messages(deflating):
    alice = deflating.joined("alice")
    bob = deflating.joined("bob")
    alice.send_json({"type": "say", "room": "lobby", "text": "z" * 100, "id": "1"})
    deflating.flush()
    assert alice.trafficStats.outgoingOctetsWebSocketLevel < (
        alice.trafficStats.outgoingOctetsAppLevel
    )
    assert bob.of_type("message")[-1]["text"] == "z" * 100


def test_a_compressed_message_that_inflates_past_the_limit_closes_with_1009(deflating, reactor):
    alice = deflating.welcomed("alice")
    bomb = {"type": "say", "room": "lobby", "text": "a", "id": "1", "pad": "a" * 50_000}
    alice.send_json(bomb)  # some 150 bytes on the wire, 50 KB inflated: the limit is 1 KB
    deflating.flush()
    assert alice.server_side.localCloseCode == 1009
    # Autobahn stops reading at the failure: the close completes at its handshake timeout
    reactor.advance(alice.server_side.closeHandshakeTimeout + 1)
    deflating.flush()
    assert alice.close_code == 1009
    assert deflating.server.user_count == 0


def test_pings_go_uncompressed_to_a_compressed_connection(deflating, reactor):
    client = deflating.welcomed("alice")
    reactor.advance(deflating.limits.ping_interval + 1)
    deflating.flush()
    assert client.pings == 1
    assert client.close_code is None
