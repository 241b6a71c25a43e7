"""The HTTP side of a listener: through its front door, twisted.web for pages and /healthz,
the WebSocket upgrade at /ws."""

import io
import json

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel


@pytest.fixture
def web(make_server):
    return make_server(via_site=True)


class Connection(StringTransport):
    """A connection accepted by the listener's front door; `send` hands bytes to whichever
    protocol holds it now (the front door's, then twisted.web's or Autobahn's)."""

    def __init__(self, web):
        super().__init__()
        self.protocol = web.front_door.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        self.protocol.makeConnection(self)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def setTcpNoDelay(self, enabled) -> None:  # as a TCP socket has (the chat protocol sets it)
        self.tcp_no_delay = bool(enabled)

    def unregisterProducer(self) -> None:  # as Twisted's TCP transport: with none, nothing to do
        if self.producer is not None:
            super().unregisterProducer()


def get(web, path: bytes, method: bytes = b"GET") -> tuple[int, dict[bytes, bytes], bytes]:
    transport = Connection(web)
    transport.send(method + b" " + path + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in header_lines)
    return int(status_line.split(b" ")[1]), headers, body


def test_websocket_upgrade_at_ws_reaches_the_chat_protocol(web):
    alice = web.joined("alice")
    alice.send_json({"type": "say", "room": "lobby", "text": "through the site", "id": "c1"})
    web.flush()
    assert alice.frames[-1] == {"type": "ack", "id": "c1", "seq": 2}


def test_tcp_nodelay_is_set_on_connections_upgraded_by_the_site(web):
    web.welcomed("alice")
    assert web.server_transports[0].getTcpNoDelay() is True


def test_healthz_is_200_with_counts_when_ready(web):
    web.joined("alice")
    status, headers, body = get(web, b"/healthz")
    assert status == 200
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"cache-control"] == b"no-store"
    assert json.loads(body) == {
        "status": "ok",
        "checks": {"listener_ws": True},
        "rooms": 1,
        "users": 1,
    }


def test_healthz_is_503_when_a_check_fails(web):
    web.checks["transcripts_writable"] = False
    status, _headers, body = get(web, b"/healthz")
    assert status == 503
    assert json.loads(body)["status"] == "unavailable"


def test_unknown_paths_are_404(web):
    assert get(web, b"/nope")[0] == 404


def test_a_request_dripped_slower_than_the_deadline_is_aborted(web, reactor):
    """An absolute deadline: bytes trickling in do not keep the connection alive."""
    deadline = web.limits.handshake_timeout
    transport = Connection(web)
    for byte in b"GET /healthz HTTP/1.1\r\nX-Drip: " + b"x" * 1000:
        transport.send(bytes([byte]))
        reactor.advance(deadline / 50)
        if transport.disconnected:
            break
    assert transport.disconnected
    assert reactor.seconds() <= deadline + deadline / 50


def test_a_request_completed_in_time_is_not_aborted(web, reactor):
    transport = Connection(web)
    transport.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    reactor.advance(web.limits.handshake_timeout + 1)
    assert not transport.disconnected
    assert transport.value().startswith(b"HTTP/1.1 200")


def test_the_access_log_holds_the_path_but_no_query_string(web):
    """A token pasted into a URL (or a Referer) must not be written to the access log."""
    log = io.StringIO()
    web.site.logFile = log
    web.site.startFactory()  # what listening does in the daemon: stamps log lines with the time
    web.site.logFile = log
    transport = Connection(web)
    transport.send(
        b"GET /healthz?token=eyJhbGciOi.secret-claims.secret-sig HTTP/1.1\r\nHost: localhost\r\n"
        b"Referer: https://chat.example.com/page?token=referer-secret#frag\r\n\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 200")
    [line] = log.getvalue().splitlines()
    assert '"GET /healthz HTTP/1.1" 200' in line
    assert '"https://chat.example.com/page"' in line
    assert "secret" not in line
    web.site.stopFactory()


@pytest.mark.parametrize("path", [b"/%00", b"/app.js%00", b"/a%00b/c", b"/%ff", b"/%c3%28"])
def test_a_path_no_file_can_have_is_404_without_a_traceback(web, log_events, path):
    """A NUL (os.stat raises ValueError: 500 and a critical traceback in twisted.web's File)
    or bytes that are not UTF-8 (logged by File as an error) name no file: 404, quietly."""
    status, headers, _body = get(web, path)
    assert status == 404
    assert headers[b"x-content-type-options"] == b"nosniff"
    noisy = [event for event in log_events if event.get("log_level", LogLevel.info) > LogLevel.info]
    assert noisy == []


def test_the_catalogues_are_readable_from_any_origin_for_the_widget(web):
    """widget.js imports /i18n/ from the sites that include it: a module needs CORS. (HEAD:
    a GET's body would be written by a producer on the global reactor.)"""
    status, headers, _body = get(web, b"/i18n/zh-CN.js", b"HEAD")
    assert status == 200
    assert headers[b"access-control-allow-origin"] == b"*"
    assert headers[b"x-content-type-options"] == b"nosniff"
    status, headers, _body = get(web, b"/app.js", b"HEAD")
    assert status == 200
    assert b"access-control-allow-origin" not in headers


@pytest.mark.parametrize("path", [b"/i18n/", b"/i18n/nope.js"])
def test_the_catalogues_directory_has_no_listing(web, path):
    status, _headers, body = get(web, path)
    assert status == 404
    assert b"en.js" not in body
