import configparser
import dataclasses
from pathlib import Path

import pytest

from chatd.config import (
    EMBEDDED_DEFAULTS,
    SECTIONS,
    Config,
    ConfigError,
    find_config_file,
    load_config,
    parse_config,
)

SAMPLE = Path(__file__).resolve().parents[2] / "etc" / "chatd.ini"
# Dataclass fields that are not keys of their section: the listener's own name, and the
# rooms declared by [room:NAME] sections, and the [webhook:NAME] endpoints.
NOT_KEYS = {"name", "declared", "endpoints"}


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.ini")
    return str(caught.value)


@pytest.fixture
def pem_file(tmp_path) -> Path:
    """Any existing, readable file: the config only checks that it is there."""
    path = tmp_path / "some.pem"
    path.write_text("not checked here\n")
    return path


# -- the sample file and the defaults ----------------------------------------------------------


def test_sample_file_describes_exactly_the_embedded_defaults():
    from_file = load_config(SAMPLE)
    embedded = load_config(None)
    assert embedded.source == EMBEDDED_DEFAULTS
    assert from_file.source == str(SAMPLE)
    assert dataclasses.replace(from_file, source=embedded.source) == embedded


def test_sample_file_shows_every_key_the_code_reads():
    """A key added to a section's dataclass must also be documented in etc/chatd.ini."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.optionxform = str
    parser.read(SAMPLE, encoding="utf-8")
    assert tuple(parser.sections()) == SECTIONS
    defaults = load_config(None)
    for section in SECTIONS:
        fields = {field.name for field in dataclasses.fields(getattr(defaults, section))}
        assert set(parser[section]) == fields - NOT_KEYS, section


def test_embedded_defaults():
    config = load_config(None)
    assert (config.ws.enabled, config.ws.interface, config.ws.port) == (True, "127.0.0.1", 8080)
    assert (config.wss.enabled, config.wss.port) == (True, 8443)
    assert config.tls.certificate is None
    assert config.transcripts.directory == Path("var/transcripts")
    assert config.transcripts.fsync == "no"
    assert (config.history.memory_events, config.history.replay_events) == (1000, 50)
    assert config.limits.retry_window == 300.0
    assert [listener.name for listener in config.listeners] == ["ws", "wss"]


# -- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("30", 30.0), ("30s", 30.0), ("500ms", 0.5), ("5m", 300.0), ("1h", 3600.0), ("1.5 s", 1.5)],
)
def test_durations(written, seconds):
    config = parse_config(f"[limits]\nretry_window = {written}\n", "test.ini")
    assert config.limits.retry_window == seconds


@pytest.mark.parametrize(("written", "value"), [("yes", True), ("Off", False), ("1", True)])
def test_booleans(written, value):
    assert parse_config(f"[ws]\nenabled = {written}\n", "test.ini").ws.enabled is value


def test_choices_are_case_insensitive_and_inline_comments_are_dropped():
    config = parse_config("[transcripts]\nfsync = BATCH ; survive power loss\n", "test.ini")
    assert config.transcripts.fsync == "batch"


def test_sizes_take_a_unit():
    config = parse_config("[limits]\nmax_message_bytes = 64k\n", "test.ini")
    assert config.limits.max_message_bytes == 65536


def test_declared_rooms_get_their_policy_and_others_the_open_one():
    text = "[room:ops]\njoin = admin, mod\npost = admin\nreplay = no\n"
    rooms = parse_config(text, "test.ini").rooms
    ops = rooms.policy("ops")
    assert (ops.join, ops.post, ops.replay) == (("admin", "mod"), ("admin",), False)
    assert (rooms.policy("lobby").join, rooms.policy("lobby").post) == (("*",), ("*",))


def test_disabled_listener_is_not_listed():
    config = parse_config("[wss]\nenabled = no\n", "test.ini")
    assert [listener.name for listener in config.listeners] == ["ws"]


def test_port_zero_on_both_listeners_is_allowed():
    config = parse_config("[ws]\nport = 0\n[wss]\nport = 0\n", "test.ini")
    assert (config.ws.port, config.wss.port) == (0, 0)


def test_certificate_key_and_chain(pem_file):
    text = f"[tls]\ncertificate = {pem_file}\nkey = {pem_file}\nchain = {pem_file}\n"
    tls = parse_config(text, "test.ini").tls
    assert (tls.certificate, tls.key, tls.chain) == (pem_file, pem_file, pem_file)


# -- every error says where: SOURCE: [section] key: problem ------------------------------------


def test_unknown_section():
    assert error_of("[websocket]\nport = 1\n").startswith("test.ini: [websocket]: unknown section")


def test_default_section_is_an_unknown_section_not_silently_merged():
    """configparser would copy [DEFAULT]'s keys into the other sections, or drop them."""
    assert error_of("[DEFAULT]\nport = 9000\n").startswith("test.ini: [DEFAULT]: unknown section")


def test_unknown_key():
    assert error_of("[ws]\nprot = 1\n") == "test.ini: [ws] prot: unknown key"


def test_keys_are_case_sensitive():
    assert error_of("[ws]\nPort = 1\n") == "test.ini: [ws] Port: unknown key"


def test_bad_boolean():
    assert error_of("[wss]\nenabled = maybe\n") == (
        "test.ini: [wss] enabled: must be yes or no, got 'maybe'"
    )


def test_bad_integer():
    assert error_of("[ws]\nport = eighty\n") == (
        "test.ini: [ws] port: must be a whole number, got 'eighty'"
    )


def test_integer_out_of_range():
    assert error_of("[ws]\nport = 65536\n") == (
        "test.ini: [ws] port: must be between 0 and 65535, got 65536"
    )


@pytest.mark.parametrize("written", ["5 minutes", "-1s", "5M", "s"])
def test_bad_duration(written):
    assert error_of(f"[limits]\nretry_window = {written}\n").startswith(
        "test.ini: [limits] retry_window: must be a duration such as 30s"
    )


def test_duration_out_of_range():
    assert error_of("[limits]\nretry_window = 25h\n") == (
        "test.ini: [limits] retry_window: must be between 0s and 86400s, got '25h'"
    )


def test_bad_choice():
    assert error_of("[transcripts]\nfsync = always\n") == (
        "test.ini: [transcripts] fsync: must be one of no, batch, got 'always'"
    )


def test_missing_certificate_file(tmp_path):
    missing = tmp_path / "missing.pem"
    assert error_of(f"[tls]\ncertificate = {missing}\n") == (
        f"test.ini: [tls] certificate: {missing} does not exist or is not a file"
    )


def test_certificate_that_is_a_directory(tmp_path):
    assert error_of(f"[tls]\ncertificate = {tmp_path}\nkey = {tmp_path}\n").startswith(
        "test.ini: [tls] certificate: "
    )


def test_key_without_certificate(pem_file):
    assert error_of(f"[tls]\nkey = {pem_file}\n") == (
        "test.ini: [tls] certificate: is required when key is set"
    )


def test_certificate_without_key(pem_file):
    assert error_of(f"[tls]\ncertificate = {pem_file}\n") == (
        "test.ini: [tls] key: is required when certificate is set"
    )


def test_chain_without_certificate(pem_file):
    assert error_of(f"[tls]\nchain = {pem_file}\n") == (
        "test.ini: [tls] certificate: is required when chain is set"
    )


def test_replay_events_above_memory_events():
    assert error_of("[history]\nmemory_events = 10\nreplay_events = 11\n") == (
        "test.ini: [history] replay_events: must not exceed memory_events (10)"
    )


def test_both_listeners_disabled():
    assert error_of("[ws]\nenabled = no\n[wss]\nenabled = no\n").startswith(
        "test.ini: [ws] enabled: both ws and wss are disabled"
    )


def test_same_port_for_both_listeners():
    assert error_of("[ws]\nport = 9000\n[wss]\nport = 9000\n") == (
        "test.ini: [wss] port: 9000 is already used by [ws]"
    )


def test_bad_size():
    assert error_of("[limits]\nmax_message_bytes = 64X\n") == (
        "test.ini: [limits] max_message_bytes: must be a size such as 65536, 64K, 16M or 1G,"
        " got '64X'"
    )


def test_room_section_with_a_bad_room_name():
    assert error_of("[room:Bad]\n").startswith("test.ini: [room:Bad]: a room name is")


def test_unknown_key_in_a_room_section():
    assert error_of("[room:ops]\nbogus = 1\n") == "test.ini: [room:ops] bogus: unknown key"


def test_token_mode_needs_a_secret():
    assert error_of("[auth]\nmode = token\n") == (
        "test.ini: [auth] secret_file: is required with mode = token and HS256"
    )


def test_metrics_on_a_disabled_listener():
    assert error_of("[metrics]\nserve_on = wss\n[wss]\nenabled = no\n") == (
        "test.ini: [metrics] serve_on: [wss] is not enabled"
    )


def test_an_origin_that_is_not_one():
    assert error_of("[server]\nallowed_origins = ftp://x\n").startswith(
        "test.ini: [server] allowed_origins: 'ftp://x' is not an origin"
    )


def test_key_outside_any_section():
    assert error_of("port = 1\n") == "test.ini: line 1: a key outside any [section]"


def test_section_twice():
    assert error_of("[ws]\n[wss]\n[ws]\n") == "test.ini: line 3: section [ws] appears twice"


def test_key_twice():
    assert error_of("[ws]\nport = 1\nport = 2\n") == "test.ini: line 3: [ws] port appears twice"


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_unparsable_line_is_quoted_once(newline):
    text = newline.join(["[ws]", "port = 1", "port 8080", ""])
    assert error_of(text) == "test.ini: line 3: cannot parse 'port 8080'"


# -- files -------------------------------------------------------------------------------------


def test_load_names_the_file_in_errors(tmp_path):
    path = tmp_path / "chatd.ini"
    path.write_text("[ws]\nport = x\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: [ws] port: ")


def test_missing_file_cannot_be_read(tmp_path):
    path = tmp_path / "nope.ini"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: cannot read: No such file or directory"


def test_directory_cannot_be_read(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read: Is a directory"


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.ini"
    path.write_bytes("[ws]\ninterface = caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: is not UTF-8 text"


def test_loaded_config_is_frozen():
    config = load_config(None)
    assert isinstance(config, Config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.ws.port = 1


def test_find_config_file_prefers_the_working_directory(tmp_path):
    local = tmp_path / "etc" / "chatd.ini"
    local.parent.mkdir()
    local.write_text("")
    system = tmp_path / "system.ini"
    system.write_text("")
    assert find_config_file(tmp_path, system) == local
    local.unlink()
    assert find_config_file(tmp_path, system) == system
    system.unlink()
    assert find_config_file(tmp_path, system) is None


@pytest.mark.parametrize(
    ("section", "key"), [("transcripts", "directory"), ("tls", "dev_directory")]
)
def test_a_directory_may_not_be_empty(section, key):
    with pytest.raises(ConfigError) as error:
        parse_config(f"[{section}]\n{key} =\n", "t.ini")
    assert str(error.value) == f"t.ini: [{section}] {key}: must not be empty"


# -- [api], [webhooks] and [webhook:NAME] ------------------------------------------------------


def test_api_needs_a_keys_file_when_enabled():
    assert error_of("[api]\nenabled = yes\n") == (
        "test.ini: [api] keys_file: is required when the API is enabled"
    )


def test_api_bots_must_be_user_ids(pem_file):
    text = f"[api]\nenabled = yes\nkeys_file = {pem_file}\nbots = shop-bot, no/way\n"
    assert error_of(text).startswith("test.ini: [api] bots: 'no/way': a name is")


def test_webhook_endpoints_are_read_in_order(pem_file):
    text = (
        f"[webhook:crm]\nurl = https://crm.example.com/hook\nsecret_file = {pem_file}\n"
        f"events = message unattended note\n"
        f"[webhook:mail]\nurl = http://127.0.0.1:9000/\nsecret_file = {pem_file}\n"
    )
    endpoints = parse_config(text, "test.ini").webhooks.endpoints
    # Notes (agents only) go only to an endpoint that names them.
    assert [(e.name, e.url, e.events) for e in endpoints] == [
        ("crm", "https://crm.example.com/hook", ("message", "unattended", "note")),
        ("mail", "http://127.0.0.1:9000/", ("message", "presence", "conversation", "unattended")),
    ]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("url = ftp://x/\nsecret_file = {pem}\n", "url: must be an http:// or https:// URL"),
        ("url = http://x/\n", "secret_file: is required"),
        ("url = http://x/\nsecret_file = {pem}\nevents = message typing\n", "events: 'typing'"),
    ],
)
def test_webhook_endpoint_errors(pem_file, body, problem):
    text = "[webhook:crm]\n" + body.format(pem=pem_file)
    assert error_of(text).startswith(f"test.ini: [webhook:crm] {problem}")


def test_webhook_retry_max_is_not_below_retry_min():
    text = "[webhooks]\nretry_min = 10s\nretry_max = 5s\n"
    assert error_of(text).startswith("test.ini: [webhooks] retry_max: must not be less")


def test_redis_url_is_checked():
    assert "[redis] url: expected redis://" in error_of("[redis]\nurl = http://localhost\n")
    assert "port 70000 is not 1-65535" in error_of("[redis]\nurl = redis://h:70000\n")
    config = parse_config("[redis]\nurl = redis://:s3cret@redis.example:6380/2\n", "x.ini")
    address = config.redis.address
    assert (address.host, address.port, address.db, address.password) == (
        "redis.example",
        6380,
        2,
        "s3cret",
    )


def test_redis_mode_takes_the_desk_and_webhooks_and_checks_its_timings():
    base = "[redis]\nurl = redis://127.0.0.1\n"
    assert parse_config(base + "[support]\nenabled = yes\n", "x.ini").support.enabled
    webhook = "[webhook:crm]\nurl = https://crm.example/hook\nsecret_file = /etc/hostname\n"
    assert parse_config(base + webhook, "x.ini").webhooks.endpoints[0].name == "crm"
    assert "[redis] cutoff: must be longer than probe_interval" in error_of(
        base + "probe_interval = 5s\ncutoff = 2s\n"
    )


def test_log_connections_is_off_unless_asked_for():
    assert load_config(None).server.log_connections is False
    assert parse_config("[server]\nlog_connections = yes\n", "test.ini").server.log_connections
    assert error_of("[server]\nlog_connections = loud\n").startswith(
        "test.ini: [server] log_connections: "
    )
