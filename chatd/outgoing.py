"""Frames as they go out: framed once per event for a whole room, and with permessage-deflate
(RFC 7692, `[limits] compression`) compressed once per event, not once per member.

Autobahn compresses per connection: a zlib compressor each (about 256 KiB of state, kept for
the connection's life) and one compression per member for every event. chatd sends without
context takeover instead: each message is compressed on its own, so its bytes are the same for
every member whose window is the same size, and one compressor per window size serves the
whole process (a full flush after each message forgets what it saw). Clients are asked to do
the same for what they send, with a small window, so inflating costs a connection little
between its messages: Autobahn's decompressor, which stops at `max_message_bytes` of output.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

from autobahn.websocket.compress import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
)

TEXT = 0x1
BINARY = 0x2
_FIN = 0x80
_RSV1 = 0x40  # "this message is compressed" (RFC 7692 6)
# The window clients are asked to compress with (when their offer lets us choose): 1 KiB, the
# memory each connection keeps for inflating. Chat frames are small; a larger window would buy
# little on them.
CLIENT_WINDOW_BITS = 10
# A flush ends with an empty stored block, which the sender leaves out (RFC 7692 7.2.1).
_FLUSH_TAIL = b"\x00\x00\xff\xff"


def frame(payload: bytes, opcode: int = TEXT, compressed: bool = False) -> bytes:
    """One final, unmasked data frame (RFC 6455 5.2), as a server sends it."""
    first = _FIN | opcode | (_RSV1 if compressed else 0)
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


def prepare_frames(payloads: Iterable[bytes]) -> bytes:
    """Text frames, one per payload, ready for any uncompressed member's socket."""
    return b"".join(map(frame, payloads))


class Deflater:
    """One raw-deflate compressor per window size the process's clients allowed."""

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION):
        self._level = level
        self._compressors: dict[int, zlib._Compress] = {}

    def frame(self, payload: bytes, window_bits: int, opcode: int = TEXT) -> bytes:
        """`payload` as one frame for a member with this window: compressed, unless that would
        not make it smaller (a message may always go uncompressed)."""
        compressor = self._compressors.get(window_bits)
        if compressor is None:
            compressor = zlib.compressobj(self._level, zlib.DEFLATED, -window_bits)
            self._compressors[window_bits] = compressor
        # The full flush ends the message on a byte boundary and resets the compressor, so the
        # next message refers to nothing before it: no context takeover.
        deflated = compressor.compress(payload) + compressor.flush(zlib.Z_FULL_FLUSH)
        if len(deflated) - len(_FLUSH_TAIL) >= len(payload):
            return frame(payload, opcode)
        return frame(deflated[: -len(_FLUSH_TAIL)], opcode, compressed=True)

    def frames(self, payloads: Iterable[bytes], window_bits: int | None) -> bytes:
        """Text frames for a member with this window (None: compression not negotiated)."""
        if window_bits is None:
            return prepare_frames(payloads)
        return b"".join(self.frame(payload, window_bits) for payload in payloads)

    def outgoing(self, lines: list[bytes]) -> Outgoing:
        return Outgoing(lines, self)


class Outgoing:
    """One turn's events for one room, as the pipeline hands them to every member (with
    compression on): framed once for the uncompressed members and once per window size for
    the compressed ones, when the first such member asks."""

    __slots__ = ("_deflater", "_framed", "lines")

    def __init__(self, lines: list[bytes], deflater: Deflater):
        self.lines = lines
        self._deflater = deflater
        self._framed: dict[int | None, bytes] = {}

    def framed(self, window_bits: int | None) -> bytes:
        """The frames for a member with this window (None: compression not negotiated)."""
        frames = self._framed.get(window_bits)
        if frames is None:
            frames = self._framed[window_bits] = self._deflater.frames(self.lines, window_bits)
        return frames


def deflate_acceptor(max_message_bytes: int):
    """Autobahn's `perMessageCompressionAccept`: take the client's first permessage-deflate
    offer, asking it not to use context takeover and to keep a small window where its offer
    allows, and to inflate no message past `max_message_bytes`."""

    def accept(offers: list) -> PerMessageDeflateOfferAccept | None:
        for offer in offers:
            if isinstance(offer, PerMessageDeflateOffer):
                return PerMessageDeflateOfferAccept(
                    offer,
                    request_no_context_takeover=offer.accept_no_context_takeover,
                    request_max_window_bits=(
                        CLIENT_WINDOW_BITS if offer.accept_max_window_bits else 0
                    ),
                    max_message_size=max_message_bytes,
                )
        return None

    return accept


def negotiated_window(extensions: Iterable) -> int | None:
    """The window size to compress with for a connection whose extensions are these (None:
    it did not negotiate permessage-deflate)."""
    for extension in extensions:
        if isinstance(extension, PerMessageDeflate):
            return extension.server_max_window_bits
    return None
