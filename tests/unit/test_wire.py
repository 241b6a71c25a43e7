import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd import errors, wire
from chatd.errors import ChatError

parser = wire.FrameParser(max_text_chars=10)


def parse(obj) -> wire.ClientFrame:
    return parser.parse(json.dumps(obj).encode())


def error_of(payload: bytes) -> ChatError:
    with pytest.raises(ChatError) as caught:
        parser.parse(payload)
    return caught.value


def error_of_frame(obj) -> ChatError:
    return error_of(json.dumps(obj).encode())


# -- valid frames ------------------------------------------------------------------------------


def test_hello_carries_name_and_ref():
    assert parse({"type": "hello", "name": "alice", "id": "h1"}) == wire.Hello("alice", "h1")


def test_hello_may_carry_a_token_a_user_secret_and_a_resume_secret():
    frame = parse({"type": "hello", "token": "t.k.n", "secret": "s3", "resume": "id.sec"})
    assert frame == wire.Hello(None, None, token="t.k.n", secret="s3", resume="id.sec")
    assert parse({"type": "hello", "name": "bob", "resume": None}).resume is None


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "hello", "name": "bob", "secret": 7},
        {"type": "hello", "name": "bob", "resume": ["x"]},
        {"type": "hello", "name": "bob", "secret": "s" * 129},
        {"type": "hello", "token": "t" * 8193},
        {"type": "refresh"},
        {"type": "refresh", "token": 5},
    ],
)
def test_malformed_secrets_and_tokens_are_bad_frames(obj):
    assert error_of_frame(obj).code == errors.BAD_FRAME


def test_refresh_carries_its_token_and_ref():
    assert parse({"type": "refresh", "token": "abc", "id": "r1"}) == wire.Refresh("abc", "r1")


def test_queue_defaults_to_every_status_and_no_cursor():
    assert parse({"type": "queue"}) == wire.Queue(ref=None, status="all", limit=None, before=None)
    frame = parse({"type": "queue", "status": "resolved", "limit": 5, "before": "c", "id": "q"})
    assert frame == wire.Queue(ref="q", status="resolved", limit=5, before="c")


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "queue", "status": "new"},
        {"type": "queue", "limit": 0},
        {"type": "queue", "limit": True},
        {"type": "queue", "before": 3},
        {"type": "queue", "before": "x" * 201},
        {"type": "queue", "view": "theirs"},
        {"type": "queue", "view": None},
    ],
)
def test_malformed_queue_frames_are_bad_frames(obj):
    assert error_of_frame(obj).code == errors.BAD_FRAME


def test_resolve_needs_a_valid_room():
    assert parse({"type": "resolve", "room": "support-x", "id": "r"}) == wire.Resolve(
        "support-x", "r"
    )
    assert error_of_frame({"type": "resolve", "room": "Bad Room"}).code == errors.BAD_ROOM


def test_assign_transfer_and_availability():
    assert parse({"type": "assign", "room": "support-x", "id": "a"}) == wire.Assign(
        "support-x", None, "a"
    )
    assert parse({"type": "assign", "room": "support-x", "agent": "bob"}).agent == "bob"
    assert parse({"type": "transfer", "room": "support-x", "agent": None}) == wire.Transfer(
        "support-x", None, None
    )
    assert parse({"type": "availability", "status": "away"}) == wire.Availability("away", None)
    assert parse({"type": "queue", "view": "mine"}).view == "mine"
    assert parse({"type": "rate", "room": "support-x", "score": 5, "comment": "Cafe\u0301"}) == (
        wire.Rate("support-x", 5, "Caf\u00e9", None)
    )


@pytest.mark.parametrize(
    ("obj", "code"),
    [
        ({"type": "assign", "room": "support-x", "agent": "no one"}, errors.BAD_NAME),
        ({"type": "assign", "room": "support-x", "agent": 7}, errors.BAD_NAME),
        ({"type": "assign"}, errors.BAD_FRAME),
        ({"type": "transfer", "room": "support-x"}, errors.BAD_FRAME),
        ({"type": "availability", "status": "busy"}, errors.BAD_FRAME),
        ({"type": "availability"}, errors.BAD_FRAME),
        ({"type": "rate", "room": "support-x", "score": 0}, errors.BAD_FRAME),
        ({"type": "rate", "room": "support-x", "score": 6}, errors.BAD_FRAME),
        ({"type": "rate", "room": "support-x", "score": "5"}, errors.BAD_FRAME),
        ({"type": "rate", "room": "support-x", "score": 5, "comment": " \u200b"}, errors.BAD_TEXT),
        (
            {"type": "rate", "room": "support-x", "score": 5, "comment": "x" * 11},
            errors.TEXT_TOO_LONG,
        ),
    ],
)
def test_malformed_desk_frames(obj, code):
    assert error_of_frame(obj).code == code


def test_join_without_since():
    assert parse({"type": "join", "room": "lobby"}) == wire.Join("lobby", None, None)


def test_join_with_null_since_is_a_plain_join():
    assert parse({"type": "join", "room": "lobby", "since": None}).since is None


def test_join_with_since():
    frame = parse({"type": "join", "room": "lobby", "since": {"epoch": "ab12", "seq": 41}})
    assert frame.since == wire.Since("ab12", 41)


def test_say_uses_its_id_as_ref():
    frame = parse({"type": "say", "room": "lobby", "text": "hi", "id": "c-17"})
    assert frame == wire.Say("lobby", "hi", "c-17")
    assert frame.ref == "c-17"


def test_say_text_is_normalised_to_nfc():
    frame = parse({"type": "say", "room": "r", "text": "e\u0301", "id": "c"})
    assert frame.text == "\u00e9"


def test_say_text_limit_counts_characters_after_nfc():
    # Ten decomposed characters are twenty code points, but ten after NFC.
    frame = parse({"type": "say", "room": "r", "text": "e\u0301" * 10, "id": "c"})
    assert frame.text == "\u00e9" * 10


def test_say_text_may_hold_newlines_and_tabs():
    assert parse({"type": "say", "room": "r", "text": "a\n\tb", "id": "c"}).text == "a\n\tb"


def test_leave_and_who():
    assert parse({"type": "leave", "room": "r"}) == wire.Leave("r", None)
    assert parse({"type": "who", "room": "r", "id": "w"}) == wire.Who("r", "w")


def test_history_defaults_and_values():
    assert parse({"type": "history", "room": "r"}) == wire.History("r", None, None, None)
    frame = parse({"type": "history", "room": "r", "before": 45, "limit": 20})
    assert (frame.before, frame.limit) == (45, 20)


def test_unknown_fields_are_ignored():
    assert parse({"type": "who", "room": "r", "colour": "blue"}) == wire.Who("r", None)


@pytest.mark.parametrize("name", ["a", "A1", "b.o_b-2", "x" * 32])
def test_names_that_match_the_grammar(name):
    assert parse({"type": "hello", "name": name}).name == name


@pytest.mark.parametrize("room", ["a", "lobby", "r_2-x", "0" * 64])
def test_rooms_that_match_the_grammar(room):
    assert parse({"type": "who", "room": room}).room == room


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"{", b"nope", b"\xff\xfe\xfd", b"[" * 100_000])
def test_not_json_is_bad_json(payload):
    assert error_of(payload).code == errors.BAD_JSON


@pytest.mark.parametrize("obj", [[], "hello", 3, None, True])
def test_not_an_object_is_bad_frame(obj):
    assert error_of_frame(obj).code == errors.BAD_FRAME


def test_missing_type_is_bad_frame_and_keeps_the_ref():
    error = error_of_frame({"id": "x1"})
    assert (error.code, error.ref) == (errors.BAD_FRAME, "x1")


def test_unknown_type_keeps_the_ref():
    error = error_of_frame({"type": "dance", "id": "x2"})
    assert (error.code, error.ref) == (errors.UNKNOWN_TYPE, "x2")


def test_unknown_type_message_is_cut_short():
    assert len(error_of_frame({"type": "z" * 1000}).message) < 100


@pytest.mark.parametrize("client_id", ["", "a b", "x" * 65, 5, None, "é"])
def test_malformed_id_is_bad_id(client_id):
    assert error_of_frame({"type": "who", "room": "r", "id": client_id}).code == errors.BAD_ID


def test_say_without_id_is_bad_id():
    assert error_of_frame({"type": "say", "room": "r", "text": "hi"}).code == errors.BAD_ID


@pytest.mark.parametrize("name", ["", "-a", "_a", ".a", "a b", "x" * 33, "ålice", "a/b"])
def test_names_outside_the_grammar_are_bad_name(name):
    assert error_of_frame({"type": "hello", "name": name}).code == errors.BAD_NAME


@pytest.mark.parametrize("room", ["", "Lobby", "-r", "r.x", "../etc", "x" * 65, "r\n"])
def test_rooms_outside_the_grammar_are_bad_room(room):
    assert error_of_frame({"type": "join", "room": room}).code == errors.BAD_ROOM


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "hello"},
        {"type": "hello", "name": 7},
        {"type": "join"},
        {"type": "join", "room": ["lobby"]},
        {"type": "join", "room": "r", "since": 41},
        {"type": "join", "room": "r", "since": {"seq": 1}},
        {"type": "join", "room": "r", "since": {"epoch": "ab", "seq": "1"}},
        {"type": "join", "room": "r", "since": {"epoch": "ab", "seq": -1}},
        {"type": "join", "room": "r", "since": {"epoch": "ab", "seq": True}},
        {"type": "join", "room": "r", "since": {"epoch": "ab", "seq": 2**53}},
        {"type": "join", "room": "r", "since": {"epoch": "AB", "seq": 1}},
        {"type": "say", "room": "r", "id": "c"},
        {"type": "say", "room": "r", "id": "c", "text": 5},
        {"type": "history", "room": "r", "before": 0},
        {"type": "history", "room": "r", "limit": 0},
        {"type": "history", "room": "r", "limit": 1.5},
        {"type": "history", "room": "r", "before": None},
    ],
)
def test_fields_of_the_wrong_type_or_range_are_bad_frame(obj):
    assert error_of_frame(obj).code == errors.BAD_FRAME


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "a\x00b", "bell\x07", "\x1b[31m", "c1\x85"])
def test_blank_text_or_control_characters_are_bad_text(text):
    assert error_of_frame({"type": "say", "room": "r", "id": "c", "text": text}).code == (
        errors.BAD_TEXT
    )


@pytest.mark.parametrize(
    "text",
    [
        "\u200b",  # zero-width space (Cf)
        "\ufeff\ufeff",  # byte order mark
        "\u200b \u200d\u2060",  # with a space, a joiner and a word joiner among them
        "\u3164",  # Hangul filler (a letter, Lo)
        "\u115f\u1160\uffa0",  # the other Hangul fillers
        "\u2800\u2800",  # Braille pattern blank (So)
        "\u202e\u00ad",  # right-to-left override, soft hyphen
        "\u034f\ufe0f",  # combining grapheme joiner, variation selector
    ],
)
def test_text_of_invisible_characters_only_is_empty(text):
    error = error_of_frame({"type": "say", "room": "r", "id": "c", "text": text})
    assert (error.code, error.message) == (errors.BAD_TEXT, "text is empty")


@pytest.mark.parametrize("text", ["a\u200bb", "\u3164x", "\u2800\u2801", "\U0001f44d\ufe0f"])
def test_invisible_characters_beside_visible_ones_are_kept(text):
    assert parse({"type": "say", "room": "r", "id": "c", "text": text}).text == text


def test_a_lone_surrogate_in_text_is_bad_text():
    payload = b'{"type": "say", "room": "r", "id": "c", "text": "a\\ud800b"}'
    assert error_of(payload).code == errors.BAD_TEXT


def test_text_over_the_limit_is_text_too_long():
    error = error_of_frame({"type": "say", "room": "r", "id": "c9", "text": "x" * 11})
    assert (error.code, error.ref) == (errors.TEXT_TOO_LONG, "c9")


# -- server frames -----------------------------------------------------------------------------


def test_encode_is_compact_utf8():
    assert wire.encode({"text": "é €", "n": 1}) == '{"text":"é €","n":1}'.encode()


def test_joined_splices_in_already_encoded_history():
    event = wire.encode({"type": "message", "seq": 3})
    names = {"alice": "Alice A.", "bob": "bob"}
    frame = json.loads(wire.joined("lobby", "ab", 3, names, [event, event], True, "j1"))
    assert frame == {
        "type": "joined",
        "room": "lobby",
        "epoch": "ab",
        "seq": 3,
        "members": ["alice", "bob"],
        "names": {"alice": "Alice A.", "bob": "bob"},
        "recovered": True,
        "ref": "j1",
        "history": [{"type": "message", "seq": 3}] * 2,
    }


def test_history_frame_with_no_events_is_valid_json():
    frame = json.loads(wire.history("lobby", "ab", [], False, None))
    assert frame == {
        "type": "history",
        "room": "lobby",
        "epoch": "ab",
        "more": False,
        "ref": None,
        "events": [],
    }


def test_reply_frames():
    fields = {"user": "bob", "name": "Bob B.", "roles": ["mod"], "session": "s1"}
    assert json.loads(wire.welcome(fields)) == {"type": "welcome", **fields}
    assert json.loads(wire.ack("c1", 7)) == {"type": "ack", "id": "c1", "seq": 7}
    assert json.loads(wire.left("r", None)) == {"type": "left", "room": "r", "ref": None}
    assert json.loads(wire.members("r", {"a": "Ann", "b": "b"}, "w")) == {
        "type": "members",
        "room": "r",
        "members": ["a", "b"],
        "names": {"a": "Ann", "b": "b"},
        "ref": "w",
    }
    assert json.loads(wire.refreshed(1234.5, "r1")) == {
        "type": "refreshed",
        "expires": 1234.5,
        "ref": "r1",
    }
    assert json.loads(wire.error("bad_room", "no", "x")) == {
        "type": "error",
        "code": "bad_room",
        "message": "no",
        "ref": "x",
    }


# -- properties --------------------------------------------------------------------------------

# Surrogates included: a JSON "\ud800" escape decodes to one.
any_text = st.text(st.characters(exclude_categories=()))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

field_names = st.sampled_from(
    ["type", "id", "name", "room", "text", "since", "epoch", "seq", "before", "limit"]
)
frame_like = st.dictionaries(
    field_names,
    json_values
    | st.sampled_from(["hello", "join", "leave", "say", "who", "history", "lobby", "c-1", "ab12"])
    | st.fixed_dictionaries({"epoch": json_values, "seq": json_values}),
    max_size=6,
)


def parse_or_protocol_error(payload: bytes) -> None:
    """Parsing may succeed or raise ChatError, and its error frame must always encode."""
    try:
        parser.parse(payload)
    except ChatError as error:
        assert error.code in ALL_CODES
        json.loads(wire.error(error.code, error.message, error.ref))


ALL_CODES = {value for key, value in vars(wire).items() if key.isupper() and isinstance(value, str)}


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_protocol_error(payload):
    parse_or_protocol_error(payload)


@given(json_values)
def test_arbitrary_json_values_only_ever_raise_protocol_error(value):
    parse_or_protocol_error(json.dumps(value).encode())


@settings(max_examples=300)
@given(frame_like)
def test_arbitrary_frame_like_objects_only_ever_raise_protocol_error(obj):
    parse_or_protocol_error(json.dumps(obj).encode())


@given(st.text(st.characters(exclude_categories=()), max_size=20))
def test_a_parsed_say_text_is_always_storable(text):
    """Whatever `say` text is accepted can be encoded as UTF-8 for the transcript."""
    try:
        frame = parse({"type": "say", "room": "r", "id": "c", "text": text})
    except ChatError as error:
        assert error.code in {errors.BAD_TEXT, errors.TEXT_TOO_LONG}
    else:
        assert json.loads(wire.encode({"text": frame.text}))["text"] == frame.text
