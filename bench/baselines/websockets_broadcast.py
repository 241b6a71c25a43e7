"""Baseline 2: Python `websockets` on asyncio, the minimal chat protocol, no persistence.

With --uvloop it runs on uvloop's event loop (libuv) instead of asyncio's own: bench server
`websockets-uvloop`, the fastest configuration of a Python peer that users pick.

Fan-out with `websockets.broadcast()`, which encodes the frame once per member and writes it
without awaiting (no backpressure). Compression is off unless --deflate: then the library's
default permessage-deflate (`compression="deflate"`: context takeover, 12-bit windows, memLevel
5), each member's frame compressed by its own connection. Keepalive pings are off unless --ping:
then the library's own keepalive, `ping_interval` and `ping_timeout` both SECONDS (bench
scenario k).

    python websockets_broadcast.py [--port 0] [--tls CERT KEY] [--ping SECONDS] [--deflate]
                                   [--uvloop]

Prints `READY <port>` once listening; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
import time

from websockets.asyncio.server import ServerConnection, broadcast, serve

EPOCH = "bench"


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def encode(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class Room:
    def __init__(self, name: str):
        self.name = name
        self.seq = 0
        self.members: dict[ServerConnection, None] = {}  # insertion-ordered set


rooms: dict[str, Room] = {}


async def handler(ws: ServerConnection) -> None:
    user = None
    joined: list[Room] = []
    try:
        async for payload in ws:
            frame = json.loads(payload)
            kind = frame.get("type")
            if kind == "hello":
                user = frame["name"]
                await ws.send(encode({"type": "welcome", "user": user, "max_text_chars": 4000}))
            elif kind == "join":
                room = rooms.get(frame["room"])
                if room is None:
                    room = rooms[frame["room"]] = Room(frame["room"])
                room.members[ws] = None
                joined.append(room)
                reply = {"type": "joined", "room": room.name, "epoch": EPOCH, "seq": room.seq}
                await ws.send(encode(reply))
            elif kind == "say":
                room = rooms[frame["room"]]
                room.seq += 1
                event = {
                    "type": "message",
                    "room": room.name,
                    "epoch": EPOCH,
                    "seq": room.seq,
                    "ts": iso_now(),
                    "from": user,
                    "id": frame["id"],
                    "text": frame["text"],
                }
                broadcast(room.members, encode(event))
                await ws.send(encode({"type": "ack", "id": frame["id"], "seq": room.seq}))
    finally:
        for room in joined:
            room.members.pop(ws, None)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument(
        "--ping", type=float, metavar="SECONDS", help="keepalive interval, timeout (default: off)"
    )
    parser.add_argument("--deflate", action="store_true", help="permessage-deflate (default: off)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (default: asyncio's)")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*args.tls)
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(
        handler,
        "127.0.0.1",
        args.port,
        ssl=context,
        compression="deflate" if args.deflate else None,
        ping_interval=args.ping or None,
        ping_timeout=args.ping or None,
        max_queue=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        await stop


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    if arguments.uvloop:
        import uvloop

        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
