"""The server API against a real `twistd -n chatd`: HTTP from the test, WebSocket clients."""

from __future__ import annotations

import urllib.request

import jsonschema
import pytest
from chatd_harness import api_call
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

KEY = "e2e-api-key-0123456789abcdef"


@pytest.fixture
def api_daemon(make_daemon, tmp_path):
    keys = tmp_path / "api-keys"
    keys.write_text(f"# the website's backend\n{KEY}\n")
    keys.chmod(0o600)

    def make(**sections):
        sections.setdefault("api", {})
        sections["api"] = {
            "enabled": "yes",
            "port": 0,
            "keys_file": keys,
            "bots": "shopbot",
            **sections["api"],
        }
        return make_daemon(**sections)

    return make


def call(daemon, method, path, body=None, key=KEY):
    return api_call(daemon.ports["api"], method, path, body, key)


def test_publish_reaches_members_with_the_next_seq_and_is_stored_first(api_daemon, clients):
    daemon = api_daemon()
    alice = clients(daemon.url("ws"))
    alice.hello("alice")
    joined = alice.join("lobby")
    frame = {"room": "lobby", "text": "your order shipped", "from": "shopbot", "id": "o-1"}
    status, answer = call(daemon, "POST", "/api/publish", frame)
    # Answered only once durable: the line is in the transcript now.
    stored = [line for line in daemon.transcript("lobby") if line["type"] == "message"]
    assert status == 200
    assert answer == {
        "room": "lobby",
        "epoch": joined["epoch"],
        "id": "o-1",
        "seq": joined["seq"] + 2,
    }
    assert stored[-1]["seq"] == answer["seq"] and stored[-1]["bot"] is True
    message = alice.next_event()
    assert (message["seq"], message["from"], message["bot"], message["text"]) == (
        answer["seq"],
        "shopbot",
        True,
        "your order shipped",
    )


def test_a_repeated_publish_returns_the_same_seq_and_is_delivered_once(api_daemon, clients):
    daemon = api_daemon()
    alice = clients(daemon.url("ws"))
    alice.hello("alice")
    alice.join("lobby")
    frame = {"room": "lobby", "text": "once", "from": "shopbot", "id": "o-2"}
    first = call(daemon, "POST", "/api/publish", frame)
    again = call(daemon, "POST", "/api/publish", frame)
    assert first == again and first[0] == 200
    call(daemon, "POST", "/api/publish", {**frame, "id": "o-3", "text": "marker"})
    assert alice.next_event()["text"] == "once"
    assert alice.next_event()["text"] == "marker"
    texts = [line.get("text") for line in daemon.transcript("lobby")]
    assert texts.count("once") == 1


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789abcdef"])
def test_a_wrong_or_missing_key_gets_401_and_nothing_is_posted(api_daemon, key):
    daemon = api_daemon()
    frame = {"room": "lobby", "text": "x", "from": "shopbot", "id": "a"}
    status, answer = call(daemon, "POST", "/api/publish", frame, key=key)
    assert (status, answer["error"]["code"]) == (401, "unauthorized")
    assert not daemon.transcript_path("lobby").exists()
    assert KEY not in daemon.log and (key is None or key not in daemon.log)


def test_disconnect_closes_every_connection_of_the_user(api_daemon, clients):
    daemon = api_daemon()
    first = clients(daemon.url("ws"))
    welcome = first.hello("alice")
    second = clients(daemon.url("ws"))
    second.send({"type": "hello", "name": "alice", "secret": welcome["secret"]})
    second.expect(type="welcome", user="alice")
    status, answer = call(daemon, "POST", "/api/disconnect", {"user": "alice", "reason": "bye"})
    assert (status, answer) == (200, {"user": "alice", "closed": 2, "revoked": False})
    assert first.expect_closed() == (4004, "bye")
    assert second.expect_closed() == (4004, "bye")
    assert call(daemon, "GET", "/api/users/alice")[1]["online"] is False


def test_an_oversized_body_is_refused_and_calls_are_counted(api_daemon):
    daemon = api_daemon(api={"max_body": "1K"})
    status, answer = api_call(daemon.ports["api"], "POST", "/api/publish", raw=b"x" * 5000, key=KEY)
    assert (status, answer["error"]["code"]) == (413, "too_large")
    call(daemon, "GET", "/api/rooms")
    metrics = _metrics(daemon)
    assert 'chatd_api_requests_total{endpoint="/api/publish",status="413"} 1.0' in metrics
    assert 'chatd_api_requests_total{endpoint="/api/rooms",status="200"} 1.0' in metrics


def _metrics(daemon) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://127.0.0.1:{daemon.ports['metrics']}/metrics"
    with opener.open(url, timeout=10) as response:
        return response.read().decode()


def test_the_answers_validate_against_the_openapi_document(api_daemon, clients):
    daemon = api_daemon(support={"enabled": "yes", "trial_agents": "ann"})
    status, document = call(daemon, "GET", "/api/openapi.json", key=None)
    assert status == 200 and document["openapi"].startswith("3.1")
    registry = Registry().with_resource(
        "urn:chatd-api", Resource.from_contents(document, default_specification=DRAFT202012)
    )
    carol = clients(daemon.url("ws"))
    carol.hello("carol")
    carol.join("support-carol")
    exchanges = [
        ("POST", "/api/publish", {"room": "lobby", "text": "hi", "from": "shopbot", "id": "p"}),
        ("POST", "/api/publish", {"room": "lobby", "text": "hi", "from": "nobody", "id": "p"}),
        ("POST", "/api/publish", {"room": "lobby"}),
        ("GET", "/api/rooms", None),
        ("GET", "/api/rooms?limit=0", None),
        ("GET", "/api/rooms/lobby", None),
        ("GET", "/api/rooms/support-carol", None),
        ("GET", "/api/rooms/nowhere", None),
        ("GET", "/api/rooms/lobby/history?limit=5", None),
        ("GET", "/api/users/carol", None),
        ("POST", "/api/rooms/support-carol/resolve", {"from": "shopbot", "id": "r"}),
        ("POST", "/api/rooms/lobby/resolve", {"from": "shopbot"}),
        ("POST", "/api/disconnect", {"user": "nobody"}),
        ("POST", "/api/disconnect", {"user": "nobody", "revoke": True}),
        ("POST", "/api/rooms/lobby/close", None),
        ("DELETE", "/api/rooms", None),
    ]
    seen = set()
    for method, path, body in exchanges:
        status, answer = call(daemon, method, path, body)
        template = _template(document, path.split("?")[0])
        operation = document["paths"][template].get(method.lower())
        responses = operation["responses"] if operation else {}
        assert str(status) in responses or status == 405, (method, path, status, answer)
        if status == 405:
            schema = {"$ref": "urn:chatd-api#/components/schemas/Error"}
        else:
            content = responses[str(status)]["content"]["application/json"]["schema"]
            schema = {"$ref": "urn:chatd-api" + content["$ref"]}
        jsonschema.Draft202012Validator(schema, registry=registry).validate(answer)
        seen.add(status)
    assert {200, 400, 403, 404, 405, 409} <= seen


def _template(document: dict, path: str) -> str:
    for template in document["paths"]:
        parts, wanted = template.split("/"), path.split("/")
        if len(parts) == len(wanted) and all(
            p == w or p.startswith("{") for p, w in zip(parts, wanted, strict=True)
        ):
            return template
    raise AssertionError(f"{path} is not in the OpenAPI document")


def test_the_daemon_refuses_to_start_without_a_good_keys_file(make_daemon, tmp_path):
    keys = tmp_path / "short"
    keys.write_text("short\n")
    daemon = make_daemon(start=False, api={"enabled": "yes", "port": 0, "keys_file": keys})
    with pytest.raises(AssertionError, match=r"\[api\] keys_file: line 1"):
        daemon.start()
