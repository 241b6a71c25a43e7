"""chatd's own listener stack with an echo handler, for the Autobahn|Testsuite fuzzing client.

Everything the daemon puts between the socket and a chat handler is real: the listener's
protocol class and options as `tap.build_listener` makes them, the web site in front of it,
the opening handshake and its compression negotiation, and the outgoing path (`_write`,
`chatd.outgoing` framing and compression). Only `onMessage` differs: it sends back what it
read, binary included, where chatd would parse a chat frame.

    python tests/conformance/echo_listener.py CONFIG.ini   # prints the port, then serves
"""

import sys
from pathlib import Path

from twisted.internet import reactor

from chatd import wire
from chatd.admission import Admission
from chatd.auth import OpenAuthenticator
from chatd.config import load_config
from chatd.outgoing import BINARY, TEXT, Deflater, frame, prepare_frames
from chatd.protocol import ListenerContext
from chatd.tap import build_listener, build_server
from chatd.web import HealthResource


class Echo:
    """Mixed in before the listener's protocol class: echo every message."""

    def onMessage(self, payload, isBinary):
        opcode = BINARY if isBinary else TEXT
        bits = getattr(self, "window_bits", None)
        deflater = self.factory.context.deflater
        self._write(
            frame(payload, opcode) if bits is None else deflater.frame(payload, bits, opcode)
        )


def main(config_path: str) -> None:
    config = load_config(Path(config_path))
    deflater = Deflater() if config.limits.compression else None
    server = build_server(
        config, reactor, prepare=deflater.outgoing if deflater else prepare_frames
    )
    context = ListenerContext(
        name="ws",
        server=server,
        parser=wire.FrameParser(max_text_chars=config.limits.max_text_chars),
        authenticator=OpenAuthenticator(),
        limits=config.limits,
        hello_timeout=config.auth.hello_timeout,
        admission=Admission(config.limits.max_connections, config.limits.max_connections_per_ip),
        clock=reactor,
        deflater=deflater,
    )
    factory, front_door = build_listener(
        context, "ws://127.0.0.1/ws", HealthResource(server, lambda: {"echo": True})
    )
    factory.protocol = type("EchoProtocol", (Echo, factory.protocol), {})
    port = reactor.listenTCP(0, front_door, interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
