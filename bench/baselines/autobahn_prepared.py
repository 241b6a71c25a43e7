"""Baseline 1: bare Autobahn on Twisted, the minimal chat protocol, no persistence.

Fan-out the way Autobahn documents it: `factory.prepareMessage` once per event, then
`sendPreparedMessage` to each member. TCP_NODELAY is set on accepted sockets, as chatd does
(Autobahn's own option is applied too late to take effect).

    python autobahn_prepared.py [--port 0] [--tls CERT KEY] [--ping SECONDS]

No keepalive unless --ping: then Autobahn's own auto-ping, `autoPingInterval` and
`autoPingTimeout` both SECONDS (bench scenario k).

Prints `READY <port>` once listening; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor, ssl

EPOCH = "bench"


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Room:
    def __init__(self, name: str):
        self.name = name
        self.seq = 0
        self.members: dict[ChatProtocol, None] = {}  # insertion-ordered set


class ChatProtocol(WebSocketServerProtocol):
    user: str | None = None

    def connectionMade(self):
        super().connectionMade()
        self.transport.setTcpNoDelay(True)
        self.joined: list[Room] = []

    def onMessage(self, payload, isBinary):
        frame = json.loads(payload)
        kind = frame.get("type")
        if kind == "hello":
            self.user = frame["name"]
            self.sendMessage(encode({"type": "welcome", "user": self.user, "max_text_chars": 4000}))
        elif kind == "join":
            room = self.factory.rooms.get(frame["room"])
            if room is None:
                room = self.factory.rooms[frame["room"]] = Room(frame["room"])
            room.members[self] = None
            self.joined.append(room)
            reply = {"type": "joined", "room": room.name, "epoch": EPOCH, "seq": room.seq}
            self.sendMessage(encode(reply))
        elif kind == "say":
            room = self.factory.rooms[frame["room"]]
            room.seq += 1
            event = {
                "type": "message",
                "room": room.name,
                "epoch": EPOCH,
                "seq": room.seq,
                "ts": iso_now(),
                "from": self.user,
                "id": frame["id"],
                "text": frame["text"],
            }
            prepared = self.factory.prepareMessage(encode(event))
            for member in room.members:
                member.sendPreparedMessage(prepared)
            self.sendMessage(encode({"type": "ack", "id": frame["id"], "seq": room.seq}))

    def onClose(self, wasClean, code, reason):
        for room in getattr(self, "joined", ()):
            room.members.pop(self, None)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument(
        "--ping", type=float, metavar="SECONDS", help="auto-ping interval, timeout (default: off)"
    )
    args = parser.parse_args(argv)
    scheme = "wss" if args.tls else "ws"
    factory = WebSocketServerFactory(f"{scheme}://127.0.0.1:{args.port or 9}/ws")
    factory.protocol = ChatProtocol
    factory.rooms = {}
    factory.setProtocolOptions(autoFragmentSize=0)
    if args.ping:
        factory.setProtocolOptions(autoPingInterval=args.ping, autoPingTimeout=args.ping)
    if args.tls:
        with open(args.tls[0], "rb") as cert, open(args.tls[1], "rb") as key:
            pem = cert.read() + key.read()
        options = ssl.PrivateCertificate.loadPEM(pem).options()
        port = reactor.listenSSL(args.port, factory, options, interface="127.0.0.1")
    else:
        port = reactor.listenTCP(args.port, factory, interface="127.0.0.1")
    print(f"READY {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
