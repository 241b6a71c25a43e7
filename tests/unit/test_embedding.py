"""Embedding the support page in other sites: `[support] embed_origins` lets them frame
/support?embed=1 (and only that), and /widget.js exists only when some site may embed."""

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from chatd.config import ConfigError, parse_config
from chatd.web import build_site

SHOPS = ("https://shop.example", "http://localhost:8000")


@pytest.fixture
def web(make_server):
    return make_server(via_site=True)


def get(site, path: bytes) -> tuple[int, dict[bytes, bytes]]:
    """The status and headers of a HEAD request (a body would be sent by the global
    reactor's cooperator)."""
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"HEAD " + path + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head = transport.value().partition(b"\r\n\r\n")[0]
    status_line, *header_lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in header_lines)
    return int(status_line.split(b" ")[1]), headers


def site_with(web, reactor, origins):
    return build_site(web.factory, web.health, 10.0, reactor, origins)


def ancestors(headers) -> str:
    policy = headers[b"content-security-policy"].decode()
    [directive] = [part.strip() for part in policy.split(";") if "frame-ancestors" in part]
    return directive


def test_only_the_embedded_support_page_may_be_framed_by_the_configured_sites(web, reactor):
    site = site_with(web, reactor, SHOPS)
    status, headers = get(site, b"/support?embed=1")
    assert status == 200
    assert ancestors(headers) == "frame-ancestors https://shop.example http://localhost:8000"
    assert "script-src 'self'" in headers[b"content-security-policy"].decode()
    for path in (b"/support", b"/support?embed=0", b"/agent?embed=1", b"/?embed=1", b"/app.js"):
        status, headers = get(site, path)
        assert (status, ancestors(headers)) == (200, "frame-ancestors 'none'"), path


def test_without_embed_origins_nothing_is_framed_and_there_is_no_widget(web, reactor):
    site = site_with(web, reactor, ())
    _status, headers = get(site, b"/support?embed=1")
    assert ancestors(headers) == "frame-ancestors 'none'"
    assert get(site, b"/widget.js")[0] == 404


def test_with_embed_origins_the_widget_is_served_as_a_script(web, reactor):
    status, headers = get(site_with(web, reactor, SHOPS), b"/widget.js")
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/javascript") or headers[
        b"content-type"
    ].startswith(b"application/javascript")
    assert headers[b"x-content-type-options"] == b"nosniff"


def read(text: str):
    return parse_config(text, "test.ini").support


def test_embed_origins_are_read_as_csp_sources():
    support = read(
        "[support]\nenabled = yes\nembed_origins = HTTPS://Shop.Example:443 http://localhost:8000\n"
    )
    assert support.embed_origins == SHOPS
    assert read("[support]\nenabled = yes\n").embed_origins == ()


@pytest.mark.parametrize(
    "origin", ["https://shop.example/page", "https://*.example", "null", "ftp://x", "'none'"]
)
def test_a_bad_embed_origin_stops_the_daemon(origin):
    with pytest.raises(ConfigError) as caught:
        read(f"[support]\nenabled = yes\nembed_origins = {origin}\n")
    assert str(caught.value).startswith(
        f"test.ini: [support] embed_origins: {origin!r} is not an origin"
    )


def test_visitors_and_embedding_need_the_desk():
    with pytest.raises(ConfigError) as caught:
        read("[support]\nvisitors = anonymous\n")
    assert str(caught.value) == (
        "test.ini: [support] visitors: anonymous visitors need enabled = yes"
    )
    with pytest.raises(ConfigError):
        read("[support]\nembed_origins = https://shop.example\n")
    assert read("[support]\nenabled = yes\nvisitors = anonymous\n").visitors == "anonymous"
