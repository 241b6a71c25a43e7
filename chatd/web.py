"""The HTTP side of a listener: the WebSocket endpoint at /ws and /healthz, via twisted.web."""

from __future__ import annotations

import json

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import Resource
from twisted.web.server import Site

from chatd.broadcaster import Broadcaster


class HealthResource(Resource):
    """GET /healthz: 200 and a small JSON body while the daemon serves."""

    isLeaf = True

    def __init__(self, broadcaster: Broadcaster):
        super().__init__()
        self._broadcaster = broadcaster

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        body = {
            "status": "ok",
            "rooms": len(self._broadcaster.rooms),
            "users": self._broadcaster.user_count,
        }
        return json.dumps(body).encode()


def build_site(websocket_factory, broadcaster: Broadcaster) -> Site:
    root = Resource()
    root.putChild(b"ws", WebSocketResource(websocket_factory))
    root.putChild(b"healthz", HealthResource(broadcaster))
    site = Site(root)
    site.displayTracebacks = False
    return site
