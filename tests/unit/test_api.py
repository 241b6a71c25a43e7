"""The server API in-process: real HTTP parsing (twisted.web on a StringTransport), the real
server built by tap, an injected clock. No sockets, no sleeps."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.testing import StringTransport

from chatd import errors, wire
from chatd.api import ApiKeys, build_api_site
from chatd.auth import Identity
from chatd.backend import Backend
from chatd.redis.client import RedisUnavailable

KEY = "k-test-0123456789abcdef"
OLD_KEY = "k-old-0123456789abcdef"


class Api:
    def __init__(self, server, site, clock):
        self.server, self.site, self.clock = server, site, clock

    def raw(self, data: bytes) -> tuple[int, dict, bytes, StringTransport]:
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(data)
        self.clock.advance(0)  # the pipeline's end of turn: the event is stored, the ack given
        head, _sep, body = transport.value().partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1]) if lines[0] else 0
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:] if b": " in line)
        channel.connectionLost(None)
        return status, headers, body, transport

    def call(self, method: str, path: str, body=None, key: str | None = KEY, headers=()):
        payload = (
            b""
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        lines = [f"{method} {path} HTTP/1.1", "Host: localhost", f"Content-Length: {len(payload)}"]
        if key is not None:
            lines.append(f"Authorization: Bearer {key}")
        lines.extend(headers)
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
        status, got_headers, data, _t = self.raw(request)
        if got_headers.get(b"transfer-encoding") == b"chunked":
            data = _unchunk(data)
        return status, json.loads(data) if data else None


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _sep, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out += rest[:n]
        data = rest[n + 2 :]
    return out


@pytest.fixture
def make_api(make_chat, clock, tmp_path):
    def make(bots=("shopbot",), max_body=4096, **sections):
        server = make_chat(**sections)
        keys_file = tmp_path / "api-keys"
        keys_file.write_text(f"# rotation: both keys work\n{OLD_KEY}\n{KEY}\n")
        keys = ApiKeys(keys_file)
        keys.load()
        parser = wire.FrameParser(max_text_chars=server._limits.max_text_chars)
        support = sections.get("support", {}).get("enabled", False)
        backend = Backend(server, bots, parser, server._history, 5.0, support)
        site = build_api_site(backend, keys, server.metrics, max_body, clock)
        return Api(server, site, clock)

    return make


@pytest.fixture
def api(make_api):
    return make_api()


def metric(server, endpoint: str, status: int) -> float:
    value = server.metrics.registry.get_sample_value(
        "chatd_api_requests_total", {"endpoint": endpoint, "status": str(status)}
    )
    return value or 0.0


def test_publish_reaches_members_as_a_bot_with_the_next_seq(api, enter):
    _session, alice, joined = enter(api.server, "alice", "lobby")
    status, body = api.call(
        "POST", "/api/publish", {"room": "lobby", "text": "shipped", "from": "shopbot", "id": "o1"}
    )
    assert status == 200
    assert body == {"room": "lobby", "epoch": joined["epoch"], "id": "o1", "seq": joined["seq"] + 2}
    message = alice.of_type("message")[-1]
    assert (message["from"], message["text"], message["bot"], message["seq"]) == (
        "shopbot",
        "shipped",
        True,
        body["seq"],
    )
    assert metric(api.server, "/api/publish", 200) == 1


def test_a_repeated_publish_gets_the_same_seq_and_is_posted_once(api, enter):
    _session, alice, _joined = enter(api.server, "alice", "lobby")
    frame = {"room": "lobby", "text": "once", "from": "shopbot", "id": "o2"}
    first = api.call("POST", "/api/publish", frame)
    again = api.call("POST", "/api/publish", frame)
    assert first == again and first[0] == 200
    assert len([m for m in alice.of_type("message") if m["id"] == "o2"]) == 1


def test_publish_creates_the_room_without_spending_a_budget(api):
    status, body = api.call(
        "POST", "/api/publish", {"room": "news", "text": "x", "from": "shopbot", "id": "n"}
    )
    assert (status, body["seq"]) == (200, 1)
    assert "news" in api.server.rooms


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789", KEY + "x", ""])
def test_a_wrong_or_missing_key_gets_401_and_nothing_is_posted(api, key):
    status, body = api.call(
        "POST",
        "/api/publish",
        {"room": "lobby", "text": "x", "from": "shopbot", "id": "a"},
        key=key,
    )
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert "lobby" not in api.server.rooms
    assert metric(api.server, "/api/publish", 401) == 1


def test_both_keys_of_a_rotation_are_accepted(api):
    assert api.call("GET", "/api/rooms", key=OLD_KEY)[0] == 200
    assert api.call("GET", "/api/rooms", key=KEY)[0] == 200


def test_only_configured_bots_may_publish(api):
    status, body = api.call(
        "POST", "/api/publish", {"room": "lobby", "text": "x", "from": "alice", "id": "a"}
    )
    assert (status, body["error"]["code"]) == (403, errors.FORBIDDEN)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", errors.BAD_JSON),
        (b"[1]", "bad_request"),
        ({"room": "lobby", "text": "x", "from": "shopbot"}, "bad_request"),
        ({"room": "Lobby!", "text": "x", "from": "shopbot", "id": "a"}, errors.BAD_ROOM),
        ({"room": "lobby", "text": " ", "from": "shopbot", "id": "a"}, errors.BAD_TEXT),
        ({"room": "lobby", "text": "x", "from": "shopbot", "id": "a b"}, errors.BAD_ID),
        ({"room": "lobby", "text": "x", "from": 3, "id": "a"}, "bad_request"),
        (b'{"room":"lobby","text":"\\ud800","from":"shopbot","id":"a"}', "bad_request"),
    ],
)
def test_bad_input_gets_400_with_a_json_error(api, body, code):
    status, answer = api.call("POST", "/api/publish", body)
    assert (status, answer["error"]["code"]) == (400, code)


def test_a_body_over_the_limit_is_refused_before_it_is_read(api):
    head = b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    status, _headers, body, transport = api.raw(head + b"{")
    assert status == 413
    assert json.loads(body)["error"]["code"] == "too_large"
    assert transport.disconnecting
    assert metric(api.server, "/api/publish", 413) == 1


def test_a_chunked_body_is_cut_off_at_the_limit(api):
    chunk = b"x" * 3000
    head = b"POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    data = head + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2 + b"0\r\n\r\n"
    status, _headers, _body, _transport = api.raw(data)
    assert status == 413


def test_unknown_paths_and_methods(api):
    assert api.call("GET", "/api/nothing")[0] == 404
    assert api.call("GET", "/elsewhere")[0] == 404
    status, body = api.call("DELETE", "/api/rooms")
    assert (status, body["error"]["code"]) == (405, "method_not_allowed")


def test_room_and_user_and_history(api, enter):
    _s, _c, joined = enter(api.server, "alice", "lobby")
    enter(api.server, "bob", "lobby")
    api.call("POST", "/api/publish", {"room": "lobby", "text": "hi", "from": "shopbot", "id": "h"})
    status, room = api.call("GET", "/api/rooms/lobby")
    assert status == 200
    assert room["members"] == [
        {"user": "alice", "name": "alice", "sessions": 1},
        {"user": "bob", "name": "bob", "sessions": 1},
    ]
    assert room["seq"] == joined["seq"] + 3
    status, user = api.call("GET", "/api/users/alice")
    assert user == {
        "user": "alice",
        "online": True,
        "sessions": 1,
        "names": ["alice"],
        "rooms": ["lobby"],
    }
    status, page = api.call("GET", f"/api/rooms/lobby/history?before={room['seq']}&limit=1")
    assert [event["seq"] for event in page["events"]] == [room["seq"] - 1]
    assert page["more"] is True
    assert api.call("GET", "/api/rooms/nowhere")[0] == 404
    assert api.call("GET", "/api/rooms/lobby/history?limit=0")[0] == 400
    status, rooms = api.call("GET", "/api/rooms")
    assert rooms["rooms"][0]["room"] == "lobby"


def test_disconnect_closes_every_connection_of_the_user(api, enter, make_connection, hello):
    _s, first, _j = enter(api.server, "alice", "lobby")
    session = api.server.sessions.of_user("alice")[0]
    second = make_connection()
    hello(api.server, second, "alice", secret=api.server.sessions._users["alice"].secret)
    status, body = api.call("POST", "/api/disconnect", {"user": "alice", "reason": "banned"})
    assert (status, body) == (200, {"user": "alice", "closed": 2, "revoked": False})
    assert first.closed == second.closed == (errors.CLOSE_DISCONNECTED, "banned")
    assert session.user == "alice"


def test_disconnect_with_revoke_needs_a_revocation_list(api):
    status, body = api.call("POST", "/api/disconnect", {"user": "alice", "revoke": True})
    assert (status, body["error"]["code"]) == (409, "no_revocation_list")


def test_disconnect_with_revoke_adds_the_user_to_the_list(make_api, tmp_path, enter):
    revoked = tmp_path / "revoked"
    revoked.write_text("# revoked\n")
    api = make_api(auth={"revoked_file": revoked})
    _s, alice, _j = enter(api.server, "alice", "lobby")
    status, body = api.call("POST", "/api/disconnect", {"user": "alice", "revoke": True})
    assert (status, body["revoked"]) == (200, True)
    assert "alice" in revoked.read_text().split()
    assert alice.closed[0] == errors.CLOSE_REVOKED
    assert api.server.revocations.revokes("alice", None)


def test_close_room_makes_every_session_leave(api, enter):
    _s, alice, _j = enter(api.server, "alice", "lobby")
    _s, bob, _j = enter(api.server, "bob", "lobby")
    status, body = api.call("POST", "/api/rooms/lobby/close")
    assert (status, body) == (200, {"room": "lobby", "closed": 2})
    assert not api.server.sessions.of_user("alice")[0].rooms
    assert (
        alice.of_type("left")
        == bob.of_type("left")
        == [{"type": "left", "room": "lobby", "ref": None}]
    )
    lines = api.server.store.path_of("lobby").read_text().splitlines()
    leaves = [json.loads(line)["user"] for line in lines if '"event":"leave"' in line]
    assert sorted(leaves) == ["alice", "bob"]


def test_resolve_as_a_bot(make_api, enter):
    api = make_api(support={"enabled": True, "trial_agents": ("ann",)})
    _s, carol, _j = enter(api.server, "carol", "support-carol")
    status, body = api.call(
        "POST", "/api/rooms/support-carol/resolve", {"from": "shopbot", "id": "r1"}
    )
    assert status == 200 and body["id"] == "r1"
    status_event = carol.of_type("status")[-1]
    assert (status_event["status"], status_event["bot"], status_event["seq"]) == (
        "resolved",
        True,
        body["seq"],
    )
    status, answer = api.call("POST", "/api/rooms/lobby/resolve", {"from": "shopbot"})
    assert (status, answer["error"]["code"]) == (409, "not_support_room")


def test_assign_as_a_bot_moves_a_conversation_to_a_connected_agent(
    make_api, enter, hello, make_connection
):
    api = make_api(support={"enabled": True})
    _s, carol, _j = enter(api.server, "carol", "support-carol")
    carol_say = wire.Say(room="support-carol", text="help", id="c1")
    api.server.say(_s, carol_say)
    api.clock.advance(0)
    agent = Identity("ann", "ann", frozenset({"agent"}))
    hello(api.server, make_connection(), "ann", identity=agent)
    status, body = api.call(
        "POST", "/api/rooms/support-carol/assign", {"agent": "ann", "from": "shopbot", "id": "x1"}
    )
    assert (status, body["id"]) == (200, "x1")
    event = carol.of_type("assignment")[-1]
    assert (event["assignee"], event["from"], event["bot"], event["seq"]) == (
        "ann",
        "shopbot",
        True,
        body["seq"],
    )
    assert api.server.desk.conversations["support-carol"].assignee == "ann"
    status, body = api.call(
        "POST", "/api/rooms/support-carol/assign", {"agent": None, "from": "shopbot"}
    )
    assert status == 200
    assert api.server.desk.conversations["support-carol"].assignee is None
    for request, expected in [
        ({"agent": "bob", "from": "shopbot"}, (404, errors.NOT_FOUND)),  # not connected
        ({"from": "shopbot"}, (400, "bad_request")),
        ({"agent": "x y", "from": "shopbot"}, (400, errors.BAD_NAME)),
        ({"agent": "ann", "from": "stranger"}, (403, errors.FORBIDDEN)),
    ]:
        status, answer = api.call("POST", "/api/rooms/support-carol/assign", request)
        assert (status, answer["error"]["code"]) == expected, request


def test_resolve_needs_the_desk(api):
    status, body = api.call("POST", "/api/rooms/support-carol/resolve", {"from": "shopbot"})
    assert (status, body["error"]["code"]) == (403, errors.FORBIDDEN)


def test_keys_file_rules(tmp_path):
    path = tmp_path / "keys"
    path.write_text("short\n")
    with pytest.raises(ValueError, match="line 1"):
        ApiKeys(path).load()
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no key"):
        ApiKeys(path).load()


def test_a_failed_reload_keeps_the_keys(tmp_path, log_events):
    path = tmp_path / "keys"
    path.write_text(KEY + "\n")
    keys = ApiKeys(path)
    keys.load()
    path.write_text("")
    keys.reload()
    assert keys.check(KEY.encode())
    assert all(KEY not in json.dumps(event, default=str) for event in log_events)


# -- fuzzing: no input yields a 5xx ---------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "room": st.one_of(st.sampled_from(["lobby", "support-carol", "Bad"]), JSON),
        "text": st.one_of(st.text(max_size=30), JSON),
        "from": st.one_of(st.just("shopbot"), JSON),
        "id": st.one_of(st.text(alphabet="ab1:.", max_size=5), JSON),
        "user": st.one_of(st.sampled_from(["alice", "x" * 40]), JSON),
        "code": st.one_of(st.integers(-5, 5000), JSON),
        "reason": st.one_of(st.text(max_size=200), JSON),
        "revoke": JSON,
    },
)
PATHS = st.sampled_from(
    [
        ("POST", "/api/publish"),
        ("POST", "/api/disconnect"),
        ("POST", "/api/rooms/lobby/close"),
        ("POST", "/api/rooms/support-carol/resolve"),
        ("GET", "/api/rooms"),
        ("GET", "/api/rooms/lobby"),
        ("GET", "/api/rooms/lobby/history"),
        ("GET", "/api/users/alice"),
    ]
)
QUERY = st.lists(
    st.tuples(
        st.sampled_from(["before", "limit", "after", "x"]),
        st.text(alphabet="0123456789-%ab +&=\u00e9", max_size=8),
    ),
    max_size=3,
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(route=PATHS, body=st.one_of(FIELDS, JSON), query=QUERY, segment=st.text(max_size=12))
def test_fuzzed_input_never_yields_a_5xx(api, route, body, query, segment):
    from urllib.parse import quote, urlencode

    method, path = route
    path = path.replace("alice", quote(segment, safe="")) if segment and "users" in path else path
    if query:
        path += "?" + urlencode(query)
    status, answer = api.call(method, path, body)
    assert status < 500, answer
    assert status == 200 or set(answer) == {"error"}


# -- Redis mode: the calls that reach past this node --------------------------------------------


class ClusterView:
    """Stands in for `server.cluster` as the backend asks it: the rooms Redis knows, a user's
    sessions on the other nodes, and disconnects told to them (recorded)."""

    def __init__(self, rooms=(), elsewhere=0, down=False, held=None):
        self.room_index = self.session_counts = self.disconnects = self
        self.known = sorted(rooms)
        self.others = elsewhere
        self.held = held or {}  # room -> name, where other nodes hold the user
        self.down = down
        self.asked: list[tuple] = []
        self.told: list[tuple] = []

    def names_after(self, after, count):
        self.asked.append((after, count))
        if self.down:
            return defer.fail(RedisUnavailable("not connected to Redis"))
        return defer.succeed([name for name in self.known if after is None or name > after][:count])

    def elsewhere(self, user, *disconnect):
        if disconnect:
            self.told.append((user, *disconnect))
        return defer.succeed(self.others)

    def rooms_elsewhere(self, user):
        return defer.succeed(self.held)


def test_the_room_list_pages_through_redis_s_rooms_and_the_node_s_own(api, enter):
    enter(api.server, "alice", "lobby")
    api.server.cluster = cluster = ClusterView(rooms=["a1", "m2", "z3"])
    status, first = api.call("GET", "/api/rooms?limit=2")
    assert (status, [r["room"] for r in first["rooms"]], first["next"]) == (
        200,
        ["a1", "lobby"],
        "lobby",
    )
    assert first["rooms"][0] == {"room": "a1", "loaded": False}
    assert first["rooms"][1]["loaded"] is True
    _status, second = api.call("GET", "/api/rooms?limit=2&after=lobby")
    assert ([r["room"] for r in second["rooms"]], second["next"]) == (["m2", "z3"], None)
    assert cluster.asked == [(None, 3), ("lobby", 3)]


def test_the_room_list_without_redis_is_unavailable(api):
    api.server.cluster = ClusterView(down=True)
    status, body = api.call("GET", "/api/rooms")
    assert (status, body["error"]["code"]) == (503, errors.UNAVAILABLE)


def test_room_details_list_the_members_present_through_other_nodes(api, enter):
    enter(api.server, "alice", "lobby")
    api.server.rooms["lobby"].others["cat"] = "Cat"
    _status, room = api.call("GET", "/api/rooms/lobby")
    assert room["members"] == [
        {"user": "alice", "name": "alice", "sessions": 1},
        {"user": "cat", "name": "Cat", "sessions": 0},
    ]


def test_user_details_count_the_sessions_on_other_nodes(api, enter):
    enter(api.server, "alice", "lobby")
    api.server.cluster = ClusterView(elsewhere=2)
    _status, alice = api.call("GET", "/api/users/alice")
    assert (alice["online"], alice["sessions"], alice["rooms"]) == (True, 3, ["lobby"])
    _status, bob = api.call("GET", "/api/users/bob")  # connected elsewhere only
    assert (bob["online"], bob["sessions"], bob["rooms"]) == (True, 2, [])
    api.server.cluster = ClusterView(elsewhere=1, held={"sales": "Alice B.", "lobby": "alice"})
    _status, alice = api.call("GET", "/api/users/alice")
    assert (alice["names"], alice["rooms"]) == (["Alice B.", "alice"], ["lobby", "sales"])


def test_disconnect_closes_here_and_tells_the_other_nodes(make_api, tmp_path, enter):
    revoked = tmp_path / "revoked"
    revoked.write_text("# revoked\n")
    api = make_api(auth={"revoked_file": revoked})
    _s, alice, _j = enter(api.server, "alice", "lobby")
    api.server.cluster = cluster = ClusterView(elsewhere=2)
    body = {"user": "alice", "code": 4321, "reason": "shop"}
    status, answer = api.call("POST", "/api/disconnect", body)
    assert (status, answer) == (200, {"user": "alice", "closed": 3, "revoked": False})
    assert alice.closed == (4321, "shop")
    _status, answer = api.call("POST", "/api/disconnect", {**body, "revoke": True})
    assert cluster.told == [
        ("alice", 4321, "shop", False),
        ("alice", errors.CLOSE_REVOKED, "revoked", True),
    ]
