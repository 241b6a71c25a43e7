"""The HTTP side of a listener: the WebSocket endpoint at /ws and /healthz, via twisted.web."""

from __future__ import annotations

import json
from collections.abc import Callable

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import Resource
from twisted.web.server import Site

from chatd.broadcaster import Broadcaster


class HealthResource(Resource):
    """GET /healthz: 200 when ready (every check true), else 503; a small JSON body either way."""

    isLeaf = True

    def __init__(self, broadcaster: Broadcaster, readiness: Callable[[], dict[str, bool]]):
        super().__init__()
        self._broadcaster = broadcaster
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
            "rooms": len(self._broadcaster.rooms),
            "users": self._broadcaster.user_count,
        }
        return json.dumps(body).encode()


def build_site(websocket_factory, health: HealthResource) -> Site:
    root = Resource()
    root.putChild(b"ws", WebSocketResource(websocket_factory))
    root.putChild(b"healthz", health)
    site = Site(root)
    site.displayTracebacks = False
    return site
