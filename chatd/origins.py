"""Which browser origins may open a WebSocket: the `Origin` header against a list of patterns.

Autobahn's own check rebuilds `scheme://host:port` from `urlsplit`, which drops the brackets of
an IPv6 host (`http://[::1]:8080` becomes `http://::1:8080` and matches no pattern), turns
patterns into regular expressions without escaping `[` and `]`, and answers an Origin it cannot
parse with HTTP 400. chatd leaves Autobahn's check open (`*`) and decides here, once per
handshake: an origin is exactly what browsers send (RFC 6454: `scheme://host[:port]`, no path,
no user), anything else is refused like a foreign origin.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SERIALIZED = re.compile(
    r"(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>\d{1,5}))?",
    re.IGNORECASE,
)


def normalise(origin: str) -> str | None:
    """`scheme://host:port` in lower case with the port spelled out and an IPv6 host in its
    short bracketed form; None if `origin` is not a serialized http(s) origin (`null`, a
    path, a user, a port that is not a number ...)."""
    match = _SERIALIZED.fullmatch(origin.strip())
    if match is None:
        return None
    scheme, host = match["scheme"].lower(), match["host"].lower()
    port = int(match["port"]) if match["port"] else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        return None
    if host.startswith("["):
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    return f"{scheme}://{host}:{port}"


class OriginPolicy:
    """Patterns as `[server] allowed_origins` writes them (`ListenerService` fills in the
    daemon's own origins when it is empty): `*` alone allows every origin but `null`; in a
    pattern `*` stands for any run of characters (`https://*.example.com:8443`)."""

    def __init__(self, patterns: Iterable[str]):
        patterns = list(patterns)
        self.any = "*" in patterns
        self._patterns = [_compile(pattern) for pattern in patterns if pattern != "*"]

    def allows(self, origin: str) -> bool:
        candidate = normalise(origin)
        if candidate is None:
            return False
        return self.any or any(pattern.fullmatch(candidate) for pattern in self._patterns)


def _compile(pattern: str) -> re.Pattern:
    exact = normalise(pattern)
    if exact is not None:  # no wildcard: compare the normal forms
        return re.compile(re.escape(exact))
    return re.compile(re.escape(pattern.strip().lower()).replace(r"\*", ".*"))
