"""The server API's HTTP side: routing, bearer keys, JSON in and out, limits and metrics.

Served on a listener of its own (`[api]`), under /api. What each call does is backend.py's;
this module only turns requests into calls and answers into JSON. Every answer is JSON: an
error is `{"error": {"code": ..., "message": ...}}` with a 4xx status (or 503), never a
traceback. A body larger than `[api] max_body` is refused with 413 as soon as its
Content-Length is seen (or, chunked, as soon as it grows past the limit), before it is read.
Every request is counted in `chatd_api_requests_total{endpoint, status}`.

Keys: `[api] keys_file` holds one or more bearer keys (several, so that they can be rotated),
re-read on SIGHUP; a request's key is compared with every one in constant time. Keys are never
logged, and neither is the Authorization header.
"""

from __future__ import annotations

import hmac
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

from prometheus_client import Counter
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from chatd import errors, openapi
from chatd.backend import NO_REVOCATION_LIST, NOT_SUPPORT_ROOM, UNKNOWN_USER, Backend
from chatd.errors import ChatError
from chatd.web import DeadlineChannel, access_log_line

log = Logger()

MIN_KEY_CHARS = 16
REQUEST_DEADLINE = 10.0
IDLE_TIMEOUT = 60.0
MAX_INTEGER = 2**53

# API-only error codes.
BAD_REQUEST = "bad_request"
UNAUTHORIZED = "unauthorized"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
TOO_LARGE = "too_large"
INTERNAL = "internal"

STATUS_OF = {
    UNAUTHORIZED: 401,
    errors.FORBIDDEN: 403,
    NOT_FOUND: 404,
    errors.UNKNOWN_ROOM: 404,
    UNKNOWN_USER: 404,
    METHOD_NOT_ALLOWED: 405,
    NOT_SUPPORT_ROOM: 409,
    NO_REVOCATION_LIST: 409,
    TOO_LARGE: 413,
    INTERNAL: 500,
    errors.UNAVAILABLE: 503,
}  # every other code: 400


class ApiError(ChatError):
    def __init__(self, code: str, message: str, headers: dict[bytes, bytes] | None = None):
        super().__init__(code, message)
        self.headers = headers or {}


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


# -- keys ---------------------------------------------------------------------------------------


class ApiKeys:
    """The bearer keys of `[api] keys_file`: one per line, `#` comments."""

    def __init__(self, path: Path):
        self.path = path
        self._keys: tuple[bytes, ...] = ()

    def load(self) -> int:
        """Read the file; raises ValueError (what is wrong, never a key) or OSError."""
        keys = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            key = line.split("#", 1)[0].strip()
            if not key:
                continue
            if len(key) < MIN_KEY_CHARS or not key.isprintable() or " " in key:
                raise ValueError(
                    f"line {number}: a key is at least {MIN_KEY_CHARS} printable characters"
                    " with no spaces"
                )
            keys.append(key.encode())
        if not keys:
            raise ValueError("holds no key")
        self._keys = tuple(keys)
        return len(keys)

    def reload(self) -> None:
        """SIGHUP: read the keys again; on any problem keep the previous ones."""
        try:
            count = self.load()
        except (OSError, ValueError) as error:
            log.error(
                "cannot reload the API keys from {path}: {problem}; keeping the previous ones",
                path=str(self.path),
                problem=getattr(error, "strerror", None) or str(error),
            )
            return
        log.info("reloaded {count} API key(s) from {path}", count=count, path=str(self.path))

    def check(self, presented: bytes) -> bool:
        """True if `presented` is one of the keys; compared with each key in constant time."""
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(presented, key)
        return found


# -- requests -----------------------------------------------------------------------------------


class ApiRequest(Request):
    """A request whose body may not outgrow the site's `max_body`: refused with 413 (and the
    connection closed) when its Content-Length says so, or when a chunked body grows past it,
    so that it is never read into memory."""

    _refused = False
    _received = 0

    def gotLength(self, length):
        if length is not None and length > self.channel.site.max_body:
            self._refuse()
            self.content = io.BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        if self._received > self.channel.site.max_body:
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self) -> None:
        self._refused = True
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after our answer
        site = self.channel.site
        body = error_body(TOO_LARGE, f"the body is larger than {site.max_body} bytes")
        head = (
            b"HTTP/1.1 413 Content Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(body)
        )
        self.channel.transport.write(head + body)
        path = getattr(self.channel, "_path", b"") or b""
        site.count(endpoint_of(path.split(b"?", 1)[0]), 413)
        self.channel.loseConnection()

    def process(self):
        if not self._refused:
            super().process()


class ApiSite(Site):
    requestFactory = ApiRequest

    def __init__(self, resource, max_body: int, count: Callable[[str, int], None], **kwargs):
        super().__init__(resource, **kwargs)
        self.max_body = max_body
        self.count = count


# -- routes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: bytes
    pattern: re.Pattern
    endpoint: str  # the metric label and the OpenAPI path
    handler: str  # the ApiResource method's name
    auth: bool = True


def _route(method: str, path: str, handler: str, auth: bool = True) -> Route:
    pattern = re.escape(path).replace(r"\{room\}", "(?P<room>[^/]*)")
    pattern = pattern.replace(r"\{user\}", "(?P<user>[^/]*)")
    return Route(method.encode(), re.compile(pattern.encode()), path, handler, auth)


ROUTES = (
    _route("GET", "/api/openapi.json", "get_openapi", auth=False),
    _route("POST", "/api/publish", "post_publish"),
    _route("GET", "/api/rooms", "get_rooms"),
    _route("GET", "/api/rooms/{room}", "get_room"),
    _route("GET", "/api/rooms/{room}/history", "get_history"),
    _route("POST", "/api/rooms/{room}/close", "post_close"),
    _route("POST", "/api/rooms/{room}/resolve", "post_resolve"),
    _route("POST", "/api/rooms/{room}/assign", "post_assign"),
    _route("GET", "/api/users/{user}", "get_user"),
    _route("POST", "/api/disconnect", "post_disconnect"),
)


def endpoint_of(path: bytes) -> str:
    """The route a path is for (its metric label), whatever the method; "other" if none."""
    for route in ROUTES:
        if route.pattern.fullmatch(path):
            return route.endpoint
    return "other"


class ApiResource(Resource):
    """Everything under /api: one leaf that routes by method and path."""

    isLeaf = True

    def __init__(self, backend: Backend, keys: ApiKeys, metrics):
        super().__init__()
        self.backend = backend
        self.keys = keys
        self._requests = Counter(
            "chatd_api_requests",
            "Server API requests, by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=metrics.registry,
        )

    def count(self, endpoint: str, status: int) -> None:
        self._requests.labels(endpoint, str(status)).inc()

    def render(self, request):
        path = request.path.split(b"?", 1)[0]
        endpoint = "other"
        try:
            route, params = self._match(request.method, path)
            endpoint = route.endpoint
            if route.auth:
                self._authenticate(request)
            result = getattr(self, route.handler)(request, **params)
        except Exception:
            return self._fail(request, endpoint, Failure())
        if not isinstance(result, Deferred):
            return self._answer(request, endpoint, 200, result)
        finished = []
        request.notifyFinish().addErrback(lambda _: finished.append("gone"))

        def answer(body):
            if not finished:
                request.write(self._answer(request, endpoint, 200, body))
                request.finish()

        def fail(failure):
            if not finished:
                request.write(self._fail(request, endpoint, failure))
                request.finish()

        result.addCallbacks(answer, fail)
        return NOT_DONE_YET

    def _match(self, method: bytes, path: bytes) -> tuple[Route, dict]:
        allowed = []
        for route in ROUTES:
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            if route.method != method:
                allowed.append(route.method)
                continue
            try:
                params = {
                    key: unquote_to_bytes(value).decode("utf-8")
                    for key, value in match.groupdict().items()
                }
            except UnicodeDecodeError:
                raise ApiError(NOT_FOUND, "no such resource") from None
            return route, params
        if allowed:
            raise ApiError(
                METHOD_NOT_ALLOWED,
                f"use {' or '.join(m.decode() for m in allowed)}",
                {b"allow": b", ".join(allowed)},
            )
        raise ApiError(NOT_FOUND, "no such resource; see /api/openapi.json")

    def _authenticate(self, request) -> None:
        header = request.getHeader(b"authorization") or b""
        scheme, _space, key = header.partition(b" ")
        if scheme.lower() != b"bearer" or not self.keys.check(key.strip()):
            raise ApiError(
                UNAUTHORIZED,
                "a valid 'Authorization: Bearer KEY' header is required",
                {b"www-authenticate": b'Bearer realm="chatd"'},
            )

    def _answer(self, request, endpoint: str, status: int, body) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        self.count(endpoint, status)
        return json.dumps(body, ensure_ascii=False).encode()

    def _fail(self, request, endpoint: str, failure: Failure) -> bytes:
        error = failure.value
        if isinstance(error, ChatError):
            status, code, message = STATUS_OF.get(error.code, 400), error.code, error.message
            for name, value in getattr(error, "headers", {}).items():
                request.setHeader(name, value)
        elif isinstance(error, UnicodeError):
            status, code, message = 400, BAD_REQUEST, "strings must be valid Unicode"
        else:
            log.failure("server API: {endpoint} failed", failure, endpoint=endpoint)
            status, code, message = 500, INTERNAL, "internal error; see the daemon's log"
        return self._answer(
            request, endpoint, status, {"error": {"code": code, "message": message}}
        )

    # -- the endpoints ------------------------------------------------------------------------

    def get_openapi(self, request) -> dict:
        return openapi.DOCUMENT

    def post_publish(self, request) -> Deferred:
        body = _json_body(request)
        return self.backend.publish(
            _string(body, "room"), _string(body, "text"), _string(body, "from"), _string(body, "id")
        )

    def get_rooms(self, request) -> dict | Deferred:
        after = _query(request, "after")
        limit = _query_integer(request, "limit", default=100, maximum=1000)
        return self.backend.rooms(after, limit)

    def get_room(self, request, room: str) -> dict | Deferred:
        return self.backend.room(room)

    def get_history(self, request, room: str) -> dict | Deferred:
        before = _query_integer(request, "before", default=None)
        limit = _query_integer(request, "limit", default=None)
        return self.backend.history(room, before, limit)

    def post_close(self, request, room: str) -> dict:
        _json_body(request, optional=True)
        return self.backend.close_room(room)

    def post_resolve(self, request, room: str) -> Deferred:
        body = _json_body(request)
        client_id = _string(body, "id") if "id" in body else None
        return self.backend.resolve(room, _string(body, "from"), client_id)

    def post_assign(self, request, room: str) -> Deferred:
        body = _json_body(request)
        if "agent" not in body:
            raise ApiError(BAD_REQUEST, "'agent' is required: a user id, or null for nobody")
        client_id = _string(body, "id") if "id" in body else None
        return self.backend.assign(room, body["agent"], _string(body, "from"), client_id)

    def get_user(self, request, user: str) -> dict | Deferred:
        return self.backend.user(user)

    def post_disconnect(self, request) -> dict | Deferred:
        body = _json_body(request)
        code = body.get("code", errors.CLOSE_DISCONNECTED)
        if not isinstance(code, int) or isinstance(code, bool):
            raise ApiError(BAD_REQUEST, "'code' must be an integer")
        reason = _string(body, "reason") if "reason" in body else "disconnected by the server"
        revoke = body.get("revoke", False)
        if not isinstance(revoke, bool):
            raise ApiError(BAD_REQUEST, "'revoke' must be true or false")
        return self.backend.disconnect(_string(body, "user"), code, reason, revoke)


def _json_body(request, optional: bool = False) -> dict:
    data = request.content.read() if request.content is not None else b""
    if optional and not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise ApiError(errors.BAD_JSON, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(BAD_REQUEST, "the body must be a JSON object")
    return body


def _string(body: dict, key: str) -> str:
    if key not in body:
        raise ApiError(BAD_REQUEST, f"missing field '{key}'")
    value = body[key]
    if not isinstance(value, str):
        raise ApiError(BAD_REQUEST, f"'{key}' must be a string")
    value.encode("utf-8")  # a lone surrogate: UnicodeError, a 400
    return value


def _query(request, key: str) -> str | None:
    values = request.args.get(key.encode())
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(BAD_REQUEST, f"'{key}' is given more than once")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(BAD_REQUEST, f"'{key}' is not UTF-8") from None


def _query_integer(request, key: str, default, maximum: int = MAX_INTEGER):
    value = _query(request, key)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= maximum:
        raise ApiError(BAD_REQUEST, f"'{key}' must be a whole number from 1 to {maximum}")
    return int(value)


def build_api_site(backend: Backend, keys: ApiKeys, metrics, max_body: int, clock) -> ApiSite:
    """The API listener's site: /api/... and nothing else (every other path: a JSON 404).

    A connection must send its first request within REQUEST_DEADLINE (a client dripping a
    header byte at a time is dropped), and is closed after IDLE_TIMEOUT without one."""
    api = ApiResource(backend, keys, metrics)
    site = ApiSite(
        _Root(api),
        max_body,
        api.count,
        timeout=IDLE_TIMEOUT,
        reactor=clock,
        logFormatter=access_log_line,
    )
    site.protocol = type("ApiChannel", (DeadlineChannel,), {"deadline": REQUEST_DEADLINE})
    site.displayTracebacks = False
    return site


class _Root(Resource):
    """/api goes to the API; anything else is a JSON 404, counted as "other"."""

    def __init__(self, api: ApiResource):
        super().__init__()
        self._api = api

    def getChild(self, path, request):
        return self._api

    def render(self, request):
        return self._api.render(request)
