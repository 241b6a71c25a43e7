"""Canned responses: the file's format, its mistakes by line, and the desk handing them to
agents at hello and again after SIGHUP."""

import pytest

from chatd import wire
from chatd.auth import Identity
from chatd.canned import CannedFileError, load_canned, parse_canned


def test_keys_and_texts_with_comments_blank_lines_and_line_breaks():
    text = (
        "# shop replies\n\nhello: Hello! How can I help?\nrefund: Refunds take 5 days.\\nSorry!\n"
    )
    assert parse_canned(text) == [
        {"key": "hello", "text": "Hello! How can I help?"},
        {"key": "refund", "text": "Refunds take 5 days.\nSorry!"},
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("hello: hi\nno colon here\n", "line 2: expected 'key: text'"),
        ("Hello: hi\n", "line 1: expected 'key: text'"),
        ("x" * 33 + ": hi\n", "line 1: expected"),
        ("hello:\n", "line 1: 'hello' has no text"),
        ("hello: hi\n# c\nhello: again\n", "line 3: 'hello' appears twice"),
        ("long: " + "y" * 4001 + "\n", "line 1: 'long' is over 4000 characters"),
    ],
)
def test_a_mistake_names_its_line(text, problem):
    with pytest.raises(CannedFileError) as caught:
        parse_canned(text)
    assert str(caught.value).startswith(problem)


def test_too_many_responses():
    with pytest.raises(CannedFileError, match="more than 1000"):
        parse_canned("".join(f"k{n}: text\n" for n in range(1001)))


def test_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "canned.txt"
    path.write_bytes(b"hello: caf\xe9\n")
    with pytest.raises(CannedFileError, match="not UTF-8"):
        load_canned(path)
    assert load_canned(None) == []


def welcome(server, make_connection, user: str, agent: bool):
    identity = Identity(user, user, frozenset({"agent"} if agent else ()))
    session, fields = server.hello(make_connection(), identity, wire.Hello(name=user, ref=None))
    return session, fields


def test_agents_get_the_responses_at_hello_and_after_a_reload(
    make_chat, make_connection, tmp_path, log_events
):
    path = tmp_path / "canned.txt"
    path.write_text("hello: Hello!\n")
    server = make_chat(support={"enabled": True, "canned_file": path})
    agent, fields = welcome(server, make_connection, "ag", agent=True)
    assert fields["canned"] == [{"key": "hello", "text": "Hello!"}]
    customer, fields = welcome(server, make_connection, "alice", agent=False)
    assert "canned" not in fields

    path.write_text("hello: Hello!\nbye: Goodbye!\n")
    server.desk.reload_canned()
    [pushed] = agent.connection.of_type("canned")
    assert [r["key"] for r in pushed["responses"]] == ["hello", "bye"]
    assert customer.connection.of_type("canned") == []

    path.write_text("Broken line\n")
    server.desk.reload_canned()  # a mistake keeps what is in force, and says so
    assert len(agent.connection.of_type("canned")) == 1
    assert [r["key"] for r in server.desk.canned] == ["hello", "bye"]
    warnings = [e for e in log_events if e.get("log_level").name == "warn"]
    assert any("line 1" in str(e.get("error")) for e in warnings)
