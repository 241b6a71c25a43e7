"""Registers chatd with twistd; imports nothing heavy so `twistd --help` stays fast."""

from twisted.application.service import ServiceMaker

chatd = ServiceMaker(
    "chatd",
    "chatd.tap",
    "A WebSocket chat daemon with rooms, durable transcripts and resumable history.",
    "chatd",
)
