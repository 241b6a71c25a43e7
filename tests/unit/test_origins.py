"""chatd/origins.py: the Origin header against allowed_origins, as browsers send it."""

import pytest

from chatd.origins import OriginPolicy, normalise
from chatd.tap import own_origins


@pytest.mark.parametrize(
    ("origin", "normal"),
    [
        ("http://localhost:8080", "http://localhost:8080"),
        ("HTTPS://Chat.Example.COM", "https://chat.example.com:443"),
        ("http://chat.example.com", "http://chat.example.com:80"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[0:0:0:0:0:0:0:1]:8080", "http://[::1]:8080"),
        ("http://[::1]", "http://[::1]:80"),
        ("null", None),
        ("", None),
        ("file://", None),
        ("ftp://chat.example.com", None),
        ("http://localhost:8080.evil.com", None),
        ("http://localhost:8080/path", None),
        ("http://user@localhost:8080", None),
        ("http://localhost:99999", None),
        ("http://[::1:8080", None),
        ("http://[::g]:8080", None),
        ("http://::1:8080", None),
    ],
)
def test_origins_are_normalised_or_refused(origin, normal):
    assert normalise(origin) == normal


def test_the_daemons_own_ipv6_loopback_origin_is_allowed():
    """The startup log says a 127.0.0.1 listener accepts http://[::1]:PORT; so it must be."""
    policy = OriginPolicy(own_origins("ws", "127.0.0.1", 8080))
    for origin in ("http://[::1]:8080", "http://localhost:8080", "http://127.0.0.1:8080"):
        assert policy.allows(origin), origin
    for origin in ("http://1:8080", "http://::1:8080", "http://[::2]:8080", "https://[::1]:8080"):
        assert not policy.allows(origin), origin  # '[::1]' is not a regex character class


def test_a_port_with_a_suffix_is_not_the_port():
    policy = OriginPolicy(["http://localhost:8080"])
    assert not policy.allows("http://localhost:8080.evil.com")
    assert not policy.allows("http://localhost:80800")


def test_wildcards_match_hosts_and_ports_but_no_more():
    policy = OriginPolicy(["https://*.example.com:8443", "http://localhost:*"])
    assert policy.allows("https://chat.example.com:8443")
    assert policy.allows("https://a.b.example.com:8443")
    assert policy.allows("http://localhost:3000")
    assert not policy.allows("https://example.com.evil.net:8443")
    assert not policy.allows("https://chat.example.com:443")
    assert not policy.allows("https://evil.net/.example.com:8443")


def test_a_star_allows_every_origin_but_null_and_non_origins():
    policy = OriginPolicy(["*"])
    assert policy.allows("https://anything.example:1234")
    assert not policy.allows("null")
    assert not policy.allows("http://localhost:8080.evil.com")
