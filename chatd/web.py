"""The HTTP side of a listener: the browser client, /ws and /healthz, via twisted.web."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from autobahn.twisted.resource import WebSocketResource
from twisted.web.http import HTTPChannel, combinedLogFormatter
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import File


class HealthResource(Resource):
    """GET /healthz: 200 when ready (every check true), else 503; a small JSON body either way."""

    isLeaf = True

    def __init__(self, server, readiness: Callable[[], dict[str, bool]]):
        super().__init__()
        self._server = server
        self._readiness = readiness

    def render_GET(self, request):
        checks = self._readiness()
        ready = all(checks.values())
        request.setResponseCode(200 if ready else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        body = {
            "status": "ok" if ready else "unavailable",
            "checks": checks,
            "rooms": len(self._server.rooms),
            "users": self._server.user_count,
        }
        return json.dumps(body).encode()


def _without_query(url: bytes) -> bytes:
    """A URL up to its query string or fragment."""
    return url.split(b"?", 1)[0].split(b"#", 1)[0]


class _WithoutQuery:
    """A request as the access log sees it: its URI and Referer cut before any query."""

    def __init__(self, request):
        self._request = request
        self.uri = _without_query(request.uri)

    def getHeader(self, name: bytes):
        value = self._request.getHeader(name)
        if value is not None and name.lower() == b"referer":
            value = _without_query(value)
        return value

    def __getattr__(self, name):
        return getattr(self._request, name)


def access_log_line(timestamp: str, request) -> str:
    """twisted.web's combined log line, without query strings: a URL may carry a secret
    (a token pasted into `?token=`, a signed link in the Referer) and logs are kept and read
    by many; the path alone says what was asked for."""
    return combinedLogFormatter(timestamp, _WithoutQuery(request))


class DeadlineChannel(HTTPChannel):
    """An HTTP channel that must deliver its first request within the handshake timeout.

    twisted.web's own timeout is an idle timeout, which a client dripping one header byte at a
    time never trips; this is an absolute deadline. Once a request is in, twisted.web (for
    /healthz) or Autobahn (for /ws, which takes the connection over) keeps time.
    """

    deadline = 10.0
    _deadline_call = None

    def connectionMade(self):
        super().connectionMade()
        self._deadline_call = self.callLater(self.deadline, self._deadline_passed)

    def allContentReceived(self):
        self._cancel_deadline()
        super().allContentReceived()

    def connectionLost(self, reason):
        self._cancel_deadline()
        super().connectionLost(reason)

    def _cancel_deadline(self):
        if self._deadline_call is not None and self._deadline_call.active():
            self._deadline_call.cancel()
        self._deadline_call = None

    def _deadline_passed(self):
        self._deadline_call = None
        if self.transport is not None:
            self.transport.abortConnection()


class StaticFile(File):
    """The browser client's files, with the headers a page facing the internet should carry.

    The pages repeat the policy in a meta tag; only a header can forbid framing
    (clickjacking), and nosniff keeps a browser from running a file as another type.
    """

    POLICY_BEFORE_FRAMING = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; "
    )
    POLICY = POLICY_BEFORE_FRAMING + "frame-ancestors 'none'"

    def getChild(self, path: bytes, request):
        # File would hand a NUL to os.stat (ValueError: a 500 and a critical traceback per
        # request) and log every segment that is not UTF-8; no file has such a name.
        if b"\x00" in path or not _is_utf8(path):
            return _NoSuchFile()
        return super().getChild(path, request)

    def render(self, request):
        self.protect(request)
        return super().render(request)

    def directoryListing(self):
        return _NoSuchFile()

    @classmethod
    def protect(cls, request) -> None:
        request.setHeader(b"content-security-policy", cls.POLICY.encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        # Revalidate each time, so a new version of the client is picked up at once.
        request.setHeader(b"cache-control", b"no-cache")


class SupportPage(StaticFile):
    """/support: framed by nobody, except in embedded mode (`?embed=1`, the widget's drawer)
    by the sites of `[support] embed_origins` (none: nobody, as every other page)."""

    def __init__(self, path: str, embed_origins: tuple[str, ...] = ()):
        super().__init__(path)
        self.embed_origins = embed_origins

    def render(self, request):
        self.protect(request)
        if self.embed_origins and request.args.get(b"embed") == [b"1"]:
            ancestors = " ".join(self.embed_origins)
            policy = self.POLICY_BEFORE_FRAMING + f"frame-ancestors {ancestors}"
            request.setHeader(b"content-security-policy", policy.encode())
        return File.render(self, request)


class Catalogues(StaticFile):
    """/i18n/: the pages' texts, one module per language. widget.js imports them from the
    sites that include it, and a module from another origin needs CORS: they are public texts,
    so any origin may read them."""

    def render(self, request):
        request.setHeader(b"access-control-allow-origin", b"*")
        return super().render(request)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _NoSuchFile(Resource):
    """404 for a path that names no file, with the static files' headers."""

    isLeaf = True

    def render(self, request):
        StaticFile.protect(request)
        return notFound().render(request)


def build_site(
    websocket_factory,
    health: HealthResource,
    handshake_timeout: float,
    clock,
    embed_origins: tuple[str, ...] = (),
) -> Site:
    # The browser client (chatd/static, package data): "/" is index.html, the chat, and the
    # support desk's pages answer at clean URLs too. A directory (/i18n/, the texts) is 404,
    # never a listing; other paths that name no file are 404 too.
    # /widget.js (the chat button other sites include) is 404 unless some site may embed.
    static = Path(__file__).parent / "static"
    root = StaticFile(str(static))
    root.putChild(b"support", SupportPage(str(static / "support.html"), embed_origins))
    if not embed_origins:
        root.putChild(b"widget.js", _NoSuchFile())
    root.putChild(b"agent", StaticFile(str(static / "agent.html")))
    root.putChild(b"i18n", Catalogues(str(static / "i18n")))
    root.putChild(b"ws", WebSocketResource(websocket_factory))
    root.putChild(b"healthz", health)
    site = Site(root, timeout=handshake_timeout, reactor=clock, logFormatter=access_log_line)
    site.protocol = type("Channel", (DeadlineChannel,), {"deadline": handshake_timeout})
    site.displayTracebacks = False
    return site
