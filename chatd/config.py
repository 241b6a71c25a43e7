"""The INI configuration: a frozen dataclass per section; errors name file, section and key.

Modelled on Synapse's one-class-per-section config: each section's class reads its own keys
through a `SectionReader`, which records which keys it consumed so that anything left over is
reported as unknown. Relative paths are taken relative to the daemon's working directory, as
twistd does for its own `--logfile` and `--pidfile`.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass
from pathlib import Path

from chatd.names import ROOM_NAME, ROOM_RULE, USER_ID, USER_RULE
from chatd.origins import normalise


class ConfigError(Exception):
    """A configuration problem, rendered as `file: [section] key: what is wrong`."""

    def __init__(self, source: str, section: str | None, key: str | None, problem: str):
        self.source = source
        self.section = section
        self.key = key
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source
        if self.section is not None:
            where += f": [{self.section}]"
            if self.key is not None:
                where += f" {self.key}"
        return f"{where}: {self.problem}"


_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_ORIGIN = re.compile(r"https?://[A-Za-z0-9*.\[\]:-]+")
_SIZE = re.compile(r"^(\d+)\s*([KMG])?$", re.IGNORECASE)
_SIZE_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, None: 1}


def parse_duration(text: str) -> float | None:
    """Seconds from `30`, `30s`, `500ms`, `5m`, `1h` or `90d`; None if it is not a duration."""
    match = _DURATION.match(text.strip())
    if match is None:
        return None
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


class SectionReader:
    """Typed access to one INI section; `finish()` rejects keys nobody asked for."""

    def __init__(self, source: str, section: str, values: dict[str, str]):
        self.source = source
        self.section = section
        self._values = values
        self._consumed: set[str] = set()

    def error(self, key: str | None, problem: str) -> ConfigError:
        return ConfigError(self.source, self.section, key, problem)

    def _raw(self, key: str) -> str | None:
        self._consumed.add(key)
        value = self._values.get(key)
        return None if value is None else value.strip()

    def text(self, key: str, default: str) -> str:
        value = self._raw(key)
        return default if value is None else value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._raw(key)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise self.error(key, f"must be yes or no, got {value!r}")

    def integer(self, key: str, default: int, minimum: int, maximum: int) -> int:
        value = self._raw(key)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise self.error(key, f"must be a whole number, got {value!r}") from None
        if not minimum <= number <= maximum:
            raise self.error(key, f"must be between {minimum} and {maximum}, got {number}")
        return number

    def duration(self, key: str, default: float, minimum: float, maximum: float) -> float:
        """Seconds, written as `30`, `30s`, `500ms`, `5m` or `1h`."""
        value = self._raw(key)
        if value is None:
            return default
        seconds = parse_duration(value)
        if seconds is None:
            raise self.error(key, f"must be a duration such as 30s, 500ms, 5m or 1h, got {value!r}")
        if not minimum <= seconds <= maximum:
            raise self.error(key, f"must be between {minimum:g}s and {maximum:g}s, got {value!r}")
        return seconds

    def size(self, key: str, default: int, minimum: int, maximum: int) -> int:
        """Bytes, written as `65536`, `64K`, `16M` or `1G`."""
        value = self._raw(key)
        if value is None:
            return default
        match = _SIZE.match(value)
        if match is None:
            raise self.error(key, f"must be a size such as 65536, 64K, 16M or 1G, got {value!r}")
        number = int(match.group(1)) * _SIZE_UNITS[match.group(2) and match.group(2).upper()]
        if not minimum <= number <= maximum:
            raise self.error(key, f"must be between {minimum} and {maximum} bytes, got {value!r}")
        return number

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._raw(key)
        if value is None:
            return default
        if value.lower() not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value.lower()

    def words(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """A comma- or space-separated list."""
        value = self._raw(key)
        if value is None:
            return default
        return tuple(word for word in re.split(r"[,\s]+", value) if word)

    def number(self, key: str, default: float, minimum: float, maximum: float) -> float:
        value = self._raw(key)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise self.error(key, f"must be a number, got {value!r}") from None
        if not minimum <= number <= maximum:
            raise self.error(key, f"must be between {minimum:g} and {maximum:g}, got {value}")
        return number

    def path(self, key: str, default: str | None, must_exist: bool = False) -> Path | None:
        value = self._raw(key)
        if value is None:
            value = default
        if not value:
            return None
        return self._checked_path(key, value, must_exist)

    def directory(self, key: str, default: str) -> Path:
        """A directory path that may not be empty (the daemon creates it if missing)."""
        value = self._raw(key)
        if value == "":
            raise self.error(key, "must not be empty")
        return self._checked_path(key, value or default, must_exist=False)

    def _checked_path(self, key: str, value: str, must_exist: bool) -> Path:
        path = Path(value).expanduser()
        if must_exist and not path.is_file():
            raise self.error(key, f"{value} does not exist or is not a file")
        if must_exist and not os.access(path, os.R_OK):
            raise self.error(key, f"{value} is not readable by this user")
        return path

    def finish(self) -> None:
        unknown = sorted(set(self._values) - self._consumed)
        if unknown:
            raise self.error(unknown[0], "unknown key")


@dataclass(frozen=True)
class ServerConfig:
    """Daemon-wide settings."""

    shutdown_timeout: float
    allowed_origins: tuple[str, ...]
    log_connections: bool

    @classmethod
    def read(cls, reader: SectionReader) -> ServerConfig:
        origins = reader.words("allowed_origins", ())
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise reader.error(
                    "allowed_origins",
                    f"{origin!r} is not an origin like https://chat.example.com or"
                    " https://*.example.com:8443",
                )
        return cls(
            shutdown_timeout=reader.duration("shutdown_timeout", 10.0, 0.0, 3600.0),
            allowed_origins=tuple(_with_port(origin) for origin in origins),
            log_connections=reader.boolean("log_connections", False),
        )


def _with_port(origin: str) -> str:
    """Autobahn compares patterns with `scheme://host:port`, the port always spelled out: an
    origin written without one means its scheme's default port, as browsers send it."""
    if origin == "*" or re.search(r":(\d+|\*)$", origin):
        return origin
    return origin + (":443" if origin.startswith("https:") else ":80")


@dataclass(frozen=True)
class ListenerConfig:
    """One WebSocket listener (`[ws]` or `[wss]`)."""

    name: str
    enabled: bool
    interface: str
    port: int

    @classmethod
    def read(cls, reader: SectionReader, default_port: int) -> ListenerConfig:
        return cls(
            name=reader.section,
            enabled=reader.boolean("enabled", True),
            interface=reader.text("interface", "127.0.0.1"),
            port=reader.integer("port", default_port, 0, 65535),
        )


@dataclass(frozen=True)
class TLSConfig:
    """The wss listener's certificate; without one, a development certificate is generated."""

    certificate: Path | None
    key: Path | None
    chain: Path | None
    dev_directory: Path
    ciphers: str
    min_version: str
    groups: tuple[str, ...]

    @classmethod
    def read(cls, reader: SectionReader) -> TLSConfig:
        certificate = reader.path("certificate", None, must_exist=True)
        key = reader.path("key", None, must_exist=True)
        chain = reader.path("chain", None, must_exist=True)
        if certificate is not None and key is None:
            raise reader.error("key", "is required when certificate is set")
        if key is not None and certificate is None:
            raise reader.error("certificate", "is required when key is set")
        if chain is not None and certificate is None:
            raise reader.error("certificate", "is required when chain is set")
        return cls(
            certificate=certificate,
            key=key,
            chain=chain,
            dev_directory=reader.directory("dev_directory", "var/dev-tls"),
            ciphers=reader.text("ciphers", "ECDHE+AESGCM:ECDHE+CHACHA20"),
            min_version=reader.choice("min_version", "1.2", ("1.2", "1.3")),
            groups=_groups(reader),
        )


def _groups(reader: SectionReader) -> tuple[str, ...]:
    """Key-exchange groups, most preferred first, separated by spaces, commas or colons (as
    OpenSSL writes them). Mozilla's intermediate configuration by default; OpenSSL's own
    list also offers X448 and P-521, which cost more and buy nothing here."""
    words = reader.words("groups", ("X25519", "prime256v1", "secp384r1"))
    groups = tuple(group for word in words for group in word.split(":") if group)
    if not groups:
        raise reader.error("groups", "must name at least one group, e.g. X25519 prime256v1")
    return groups


@dataclass(frozen=True)
class TranscriptConfig:
    """Where room transcripts live and how hard each batch is pushed to disk."""

    directory: Path
    fsync: str
    rotate: str
    rotate_size: int
    min_free_space: int = 64 * 1024**2

    @classmethod
    def read(cls, reader: SectionReader) -> TranscriptConfig:
        return cls(
            directory=reader.directory("directory", "var/transcripts"),
            fsync=reader.choice("fsync", "no", ("no", "batch")),
            rotate=reader.choice("rotate", "daily", ("daily", "never")),
            rotate_size=reader.size("rotate_size", 0, 0, 2**40),
            min_free_space=reader.size("min_free_space", 64 * 1024**2, 0, 2**50),
        )


@dataclass(frozen=True)
class HistoryConfig:
    """How many events a room keeps in memory, replays on join and returns per page."""

    memory_events: int
    replay_events: int
    page_limit: int

    @classmethod
    def read(cls, reader: SectionReader) -> HistoryConfig:
        memory_events = reader.integer("memory_events", 1000, 1, 1_000_000)
        replay_events = reader.integer("replay_events", 50, 0, 10_000)
        if replay_events > memory_events:
            raise reader.error("replay_events", f"must not exceed memory_events ({memory_events})")
        return cls(
            memory_events=memory_events,
            replay_events=replay_events,
            page_limit=reader.integer("page_limit", 200, 1, 10_000),
        )


@dataclass(frozen=True)
class LimitsConfig:
    """What one message, one connection and one address may cost the daemon."""

    max_message_bytes: int
    max_text_chars: int
    retry_window: float
    max_connections: int
    max_connections_per_ip: int
    handshake_timeout: float
    messages_per_second: float
    message_burst: int
    flood_close_after: int
    max_rooms_per_connection: int
    ping_interval: float
    ping_timeout: float
    max_buffered_bytes: int
    slow_consumer_grace: float
    cheap_per_second: float
    cheap_burst: int
    typing_per_second: float  # typing indicators' own budget (chatd/typing.py)
    typing_burst: int
    compression: bool  # offer permessage-deflate (chatd/outgoing.py)
    listen_backlog: int  # connections the kernel queues before chatd accepts them

    @classmethod
    def read(cls, reader: SectionReader) -> LimitsConfig:
        return cls(
            max_message_bytes=reader.size("max_message_bytes", 65536, 1024, 16 * 1024 * 1024),
            max_text_chars=reader.integer("max_text_chars", 4000, 1, 1_000_000),
            retry_window=reader.duration("retry_window", 300.0, 0.0, 86400.0),
            max_connections=reader.integer("max_connections", 10000, 1, 10_000_000),
            max_connections_per_ip=reader.integer("max_connections_per_ip", 50, 1, 10_000_000),
            handshake_timeout=reader.duration("handshake_timeout", 10.0, 0.1, 3600.0),
            messages_per_second=reader.number("messages_per_second", 10.0, 0.01, 1e6),
            message_burst=reader.integer("message_burst", 30, 1, 1_000_000),
            flood_close_after=reader.integer("flood_close_after", 20, 1, 1_000_000),
            max_rooms_per_connection=reader.integer("max_rooms_per_connection", 50, 1, 100_000),
            ping_interval=reader.duration("ping_interval", 30.0, 0.0, 86400.0),
            ping_timeout=reader.duration("ping_timeout", 10.0, 0.1, 3600.0),
            max_buffered_bytes=reader.size("max_buffered_bytes", 1024 * 1024, 1024, 2**34),
            slow_consumer_grace=reader.duration("slow_consumer_grace", 5.0, 0.0, 3600.0),
            cheap_per_second=reader.number("cheap_per_second", 20.0, 0.01, 1e6),
            cheap_burst=reader.integer("cheap_burst", 40, 1, 1_000_000),
            typing_per_second=reader.number("typing_per_second", 2.0, 0.01, 1e6),
            typing_burst=reader.integer("typing_burst", 5, 1, 1_000_000),
            compression=reader.boolean("compression", False),
            listen_backlog=reader.integer("listen_backlog", 1024, 1, 65535),
        )


@dataclass(frozen=True)
class AuthConfig:
    """Who a connection is: a name it picks (open) or a signed JWT (token)."""

    mode: str
    hello_timeout: float
    algorithm: str
    secret_file: Path | None
    public_key_file: Path | None
    audience: str | None
    issuer: str | None
    leeway: float
    max_sessions_per_user: int = 10
    revoked_file: Path | None = None

    @classmethod
    def read(cls, reader: SectionReader) -> AuthConfig:
        mode = reader.choice("mode", "open", ("open", "token"))
        algorithm = reader.text("algorithm", "HS256")
        if algorithm not in ("HS256", "RS256", "ES256"):
            raise reader.error("algorithm", f"must be HS256, RS256 or ES256, got {algorithm!r}")
        secret_file = reader.path("secret_file", None, must_exist=True)
        public_key_file = reader.path("public_key_file", None, must_exist=True)
        if mode == "token" and algorithm == "HS256" and secret_file is None:
            raise reader.error("secret_file", "is required with mode = token and HS256")
        if mode == "token" and algorithm != "HS256" and public_key_file is None:
            raise reader.error("public_key_file", f"is required with mode = token and {algorithm}")
        return cls(
            mode=mode,
            hello_timeout=reader.duration("hello_timeout", 10.0, 0.1, 3600.0),
            algorithm=algorithm,
            secret_file=secret_file,
            public_key_file=public_key_file,
            audience=reader.text("audience", "") or None,
            issuer=reader.text("issuer", "") or None,
            leeway=reader.duration("leeway", 30.0, 0.0, 3600.0),
            max_sessions_per_user=reader.integer("max_sessions_per_user", 10, 1, 10_000),
            revoked_file=reader.path("revoked_file", None, must_exist=True),
        )


ANYONE = "*"


@dataclass(frozen=True)
class RoomPolicy:
    """Who may join and post in a room, and how much of its history it keeps and replays."""

    join: tuple[str, ...] = (ANYONE,)
    post: tuple[str, ...] = (ANYONE,)
    replay: bool = True
    memory_events: int | None = None  # None: [history] memory_events
    moderate: tuple[str, ...] = ()  # roles that may delete others' messages, kick, ban, mute
    max_age: float | None = None  # None: [retention] max_age

    @classmethod
    def read(cls, reader: SectionReader) -> RoomPolicy:
        return cls(
            join=reader.words("join", (ANYONE,)),
            post=reader.words("post", (ANYONE,)),
            replay=reader.boolean("replay", True),
            memory_events=reader.integer("memory_events", 0, 0, 1_000_000) or None,
            moderate=reader.words("moderate", ()),
            max_age=reader.duration("max_age", 0.0, 0.0, MAX_AGE_LIMIT) or None,
        )


@dataclass(frozen=True)
class RoomsConfig:
    """Room creation, and the rooms declared with [room:NAME] sections."""

    allow_create: bool
    max_rooms: int
    declared: dict[str, RoomPolicy]
    idle_unload: float = 600.0
    creations_per_user: int = 30
    edit_window: float = 900.0
    typing_timeout: float = 5.0  # a typing indicator not renewed ends by itself

    @classmethod
    def read(cls, reader: SectionReader, declared: dict[str, RoomPolicy]) -> RoomsConfig:
        return cls(
            allow_create=reader.boolean("allow_create", True),
            max_rooms=reader.integer("max_rooms", 10000, 1, 10_000_000),
            declared=declared,
            idle_unload=reader.duration("idle_unload", 600.0, 0.0, 7 * 86400.0),
            creations_per_user=reader.integer("creations_per_user", 30, 1, 1_000_000),
            edit_window=reader.duration("edit_window", 900.0, 0.0, 7 * 86400.0),
            typing_timeout=reader.duration("typing_timeout", 5.0, 0.1, 300.0),
        )

    def policy(self, room: str) -> RoomPolicy:
        return self.declared.get(room, _OPEN_ROOM)


_OPEN_ROOM = RoomPolicy()


@dataclass(frozen=True)
class MetricsConfig:
    """Where /metrics is served: its own local listener (default) or a chat listener."""

    enabled: bool
    serve_on: str
    interface: str
    port: int

    @classmethod
    def read(cls, reader: SectionReader) -> MetricsConfig:
        return cls(
            enabled=reader.boolean("enabled", True),
            serve_on=reader.choice("serve_on", "local", ("local", "ws", "wss")),
            interface=reader.text("interface", "127.0.0.1"),
            port=reader.integer("port", 9101, 0, 65535),
        )


@dataclass(frozen=True)
class SupportConfig:
    """The customer-support desk (docs/protocol.md, "Support desk")."""

    enabled: bool
    agent_role: str
    trial_agents: tuple[str, ...]
    customers_join_public: bool = False
    resolved_ttl: float = 3600.0
    unattended_after: float = 0.0  # 0: no unattended events
    auto_assign: str = "none"  # none | round_robin
    max_open_per_agent: int = 10  # for auto-assignment; 0: no limit
    canned_file: Path | None = None  # canned responses (chatd/canned.py)
    visitors: str = "token"  # token | anonymous (chatd/visitors.py)
    embed_origins: tuple[str, ...] = ()  # sites that may frame /support?embed=1 (widget.js)

    @classmethod
    def read(cls, reader: SectionReader) -> SupportConfig:
        embed_origins = reader.words("embed_origins", ())
        for origin in embed_origins:
            if embed_origin(origin) is None:
                raise reader.error(
                    "embed_origins",
                    f"{origin!r} is not an origin like https://www.example.com or"
                    " http://localhost:8000 (a scheme, a host and maybe a port; no path)",
                )
        enabled = reader.boolean("enabled", False)
        visitors = reader.choice("visitors", "token", ("token", "anonymous"))
        if not enabled and visitors != "token":
            raise reader.error("visitors", "anonymous visitors need enabled = yes")
        if not enabled and embed_origins:
            raise reader.error("embed_origins", "embedding the support page needs enabled = yes")
        return cls(
            enabled=enabled,
            agent_role=reader.text("agent_role", "agent"),
            trial_agents=reader.words("trial_agents", ()),
            customers_join_public=reader.boolean("customers_join_public", False),
            resolved_ttl=reader.duration("resolved_ttl", 3600.0, 0.0, 365 * 86400.0),
            unattended_after=reader.duration("unattended_after", 0.0, 0.0, 7 * 86400.0),
            auto_assign=reader.choice("auto_assign", "none", ("none", "round_robin")),
            max_open_per_agent=reader.integer("max_open_per_agent", 10, 0, 100_000),
            canned_file=reader.path("canned_file", None, must_exist=True),
            visitors=visitors,
            embed_origins=tuple(embed_origin(origin) for origin in embed_origins),
        )


def embed_origin(text: str) -> str | None:
    """An origin as a CSP source (`https://www.example.com`, `http://localhost:8000`): lower
    case, the port only when it is not the scheme's default; None if `text` is no http(s)
    origin (a path, a wildcard, a user ...)."""
    normal = normalise(text)
    if normal is None or "*" in text:
        return None
    without_port, _colon, port = normal.rpartition(":")
    default = "443" if normal.startswith("https:") else "80"
    return without_port if port == default else normal


@dataclass(frozen=True)
class ApiConfig:
    """The server API for the website's backend (docs/api.md), on a listener of its own."""

    enabled: bool
    interface: str
    port: int
    keys_file: Path | None
    bots: tuple[str, ...]
    max_body: int
    timeout: float

    @classmethod
    def read(cls, reader: SectionReader) -> ApiConfig:
        enabled = reader.boolean("enabled", False)
        keys_file = reader.path("keys_file", None, must_exist=enabled)
        if enabled and keys_file is None:
            raise reader.error("keys_file", "is required when the API is enabled")
        bots = reader.words("bots", ())
        for bot in bots:
            if not USER_ID.fullmatch(bot):
                raise reader.error("bots", f"{bot!r}: {USER_RULE}")
        return cls(
            enabled=enabled,
            interface=reader.text("interface", "127.0.0.1"),
            port=reader.integer("port", 9102, 0, 65535),
            keys_file=keys_file,
            bots=bots,
            max_body=reader.size("max_body", 64 * 1024, 1024, 16 * 1024**2),
            timeout=reader.duration("timeout", 10.0, 0.1, 3600.0),
        )


# `note` (the agents' internal notes) only for an endpoint that names it: a receiver that
# passes `message` events on to customers must not get notes by default.
WEBHOOK_EVENTS = ("message", "presence", "conversation", "unattended", "note")
WEBHOOK_DEFAULT_EVENTS = ("message", "presence", "conversation", "unattended")


@dataclass(frozen=True)
class WebhookEndpoint:
    """One `[webhook:NAME]` receiver: where events go, the secret that signs them, which ones."""

    name: str
    url: str
    secret_file: Path
    events: tuple[str, ...]

    @classmethod
    def read(cls, reader: SectionReader, name: str) -> WebhookEndpoint:
        url = reader.text("url", "")
        if not _WEBHOOK_URL.fullmatch(url):
            raise reader.error("url", f"must be an http:// or https:// URL, got {url!r}")
        secret_file = reader.path("secret_file", None, must_exist=True)
        if secret_file is None:
            raise reader.error("secret_file", "is required: the file of the signing secret")
        events = reader.words("events", WEBHOOK_DEFAULT_EVENTS)
        for event in events:
            if event not in WEBHOOK_EVENTS:
                raise reader.error("events", f"{event!r} is not one of {', '.join(WEBHOOK_EVENTS)}")
        if not events:
            raise reader.error("events", "names no event type")
        return cls(name=name, url=url, secret_file=secret_file, events=events)


_WEBHOOK_URL = re.compile(r"https?://[^\s/?#]+(/[^\s#]*)?")


@dataclass(frozen=True)
class WebhooksConfig:
    """Signed webhooks: delivery settings shared by every `[webhook:NAME]` endpoint."""

    state_directory: Path
    batch_size: int
    timeout: float
    retry_min: float
    retry_max: float
    endpoints: tuple[WebhookEndpoint, ...] = ()

    @classmethod
    def read(cls, reader: SectionReader, endpoints: tuple[WebhookEndpoint, ...]) -> WebhooksConfig:
        retry_min = reader.duration("retry_min", 1.0, 0.01, 3600.0)
        retry_max = reader.duration("retry_max", 300.0, 0.01, 86400.0)
        if retry_max < retry_min:
            raise reader.error("retry_max", f"must not be less than retry_min ({retry_min:g}s)")
        return cls(
            state_directory=reader.directory("state_directory", "var/webhooks"),
            batch_size=reader.integer("batch_size", 100, 1, 10_000),
            timeout=reader.duration("timeout", 10.0, 0.1, 600.0),
            retry_min=retry_min,
            retry_max=retry_max,
            endpoints=endpoints,
        )


MAX_AGE_LIMIT = 100 * 365 * 86400.0


@dataclass(frozen=True)
class RetentionConfig:
    """How long transcripts keep events (docs: README, "Retention"); 0 keeps them forever."""

    max_age: float = 0.0
    interval: float = 86400.0

    @classmethod
    def read(cls, reader: SectionReader) -> RetentionConfig:
        return cls(
            max_age=reader.duration("max_age", 0.0, 0.0, MAX_AGE_LIMIT),
            interval=reader.duration("interval", 86400.0, 1.0, 7 * 86400.0),
        )


_REDIS_URL = re.compile(
    r"^redis://(?::(?P<password>[^@/]*)@)?(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:]+\])"
    r"(?::(?P<port>\d{1,5}))?(?:/(?P<db>\d{1,2}))?$"
)
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_NODE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    db: int
    password: str | None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        match = _REDIS_URL.match(url)
        if match is None:
            raise ValueError("expected redis://[:PASSWORD@]HOST[:PORT][/DB]")
        port = int(match.group("port") or 6379)
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is not 1-65535")
        return cls(
            match.group("host").strip("[]"),
            port,
            int(match.group("db") or 0),
            match.group("password"),
        )


@dataclass(frozen=True)
class RedisConfig:
    """Several chatd processes sharing rooms through Redis (README, "Running several
    processes"); an empty `url` is the single-process mode."""

    url: str = ""
    key_prefix: str = "chatd"
    node: str = ""  # empty: the host name and process id, chosen at start
    connect_timeout: float = 5.0
    command_timeout: float = 2.0
    probe_interval: float = 1.0
    cutoff: float = 5.0
    node_lease: float = 10.0
    archiver: bool = True
    accept_weak_durability: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def address(self) -> RedisAddress:
        return RedisAddress.parse(self.url)

    @classmethod
    def read(cls, reader: SectionReader) -> RedisConfig:
        url = reader.text("url", "").strip()
        if url:
            try:
                RedisAddress.parse(url)
            except ValueError as error:
                raise reader.error("url", str(error)) from None
        prefix = reader.text("key_prefix", "chatd")
        if not _KEY_PREFIX.match(prefix):
            raise reader.error("key_prefix", "1-32 of A-Z a-z 0-9 '_' '.' '-'")
        node = reader.text("node", "")
        if node and not _NODE_NAME.match(node):
            raise reader.error("node", "1-64 of A-Z a-z 0-9 '_' '.' ':' '-'")
        probe_interval = reader.duration("probe_interval", 1.0, 0.05, 60.0)
        cutoff = reader.duration("cutoff", 5.0, 0.1, 3600.0)
        if cutoff <= probe_interval:
            raise reader.error("cutoff", "must be longer than probe_interval")
        return cls(
            url=url,
            key_prefix=prefix,
            node=node,
            connect_timeout=reader.duration("connect_timeout", 5.0, 0.1, 300.0),
            command_timeout=reader.duration("command_timeout", 2.0, 0.05, 300.0),
            probe_interval=probe_interval,
            cutoff=cutoff,
            node_lease=reader.duration("node_lease", 10.0, 1.0, 3600.0),
            archiver=reader.boolean("archiver", True),
            accept_weak_durability=reader.boolean("accept_weak_durability", False),
        )


@dataclass(frozen=True)
class Config:
    source: str
    server: ServerConfig
    ws: ListenerConfig
    wss: ListenerConfig
    tls: TLSConfig
    transcripts: TranscriptConfig
    history: HistoryConfig
    limits: LimitsConfig
    metrics: MetricsConfig
    auth: AuthConfig
    rooms: RoomsConfig
    support: SupportConfig
    api: ApiConfig
    webhooks: WebhooksConfig
    retention: RetentionConfig = RetentionConfig()
    redis: RedisConfig = RedisConfig()

    @property
    def listeners(self) -> list[ListenerConfig]:
        return [listener for listener in (self.ws, self.wss) if listener.enabled]


EMBEDDED_DEFAULTS = "<embedded defaults>"
SECTIONS = (
    "server",
    "ws",
    "wss",
    "tls",
    "auth",
    "rooms",
    "support",
    "transcripts",
    "history",
    "limits",
    "metrics",
    "api",
    "webhooks",
    "retention",
    "redis",
)
ROOM_SECTION = "room:"
WEBHOOK_SECTION = "webhook:"


def parse_config(text: str, source: str) -> Config:
    """Parse INI text; `source` names the file in error messages."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.optionxform = str  # keys are case-sensitive: `Port` is a typo, not `port`
    try:
        parser.read_string(text, source=source)
    except configparser.Error as error:
        raise ConfigError(source, None, None, _describe_parse_error(error, text)) from None
    room_sections = [name for name in parser.sections() if name.startswith(ROOM_SECTION)]
    webhook_sections = [n for n in parser.sections() if n.startswith(WEBHOOK_SECTION)]
    # configparser would silently copy a [DEFAULT] section's keys into every other section.
    default = [parser.default_section] if parser.defaults() else []
    for section in default + parser.sections():
        if (
            section not in SECTIONS
            and section not in room_sections
            and section not in webhook_sections
        ):
            raise ConfigError(
                source,
                section,
                None,
                f"unknown section (known: {', '.join(SECTIONS)}, room:NAME, webhook:NAME)",
            )
    readers = {
        name: SectionReader(source, name, dict(parser[name]) if parser.has_section(name) else {})
        for name in (*SECTIONS, *room_sections, *webhook_sections)
    }
    declared = {}
    for section in room_sections:
        room = section[len(ROOM_SECTION) :]
        if not ROOM_NAME.fullmatch(room):
            raise ConfigError(source, section, None, ROOM_RULE)
        declared[room] = RoomPolicy.read(readers[section])
    endpoints = []
    for section in webhook_sections:
        name = section[len(WEBHOOK_SECTION) :]
        if not ROOM_NAME.fullmatch(name):
            raise ConfigError(source, section, None, "a webhook name is 1-64 of a-z 0-9 '_' '-'")
        endpoints.append(WebhookEndpoint.read(readers[section], name))
    config = Config(
        source=source,
        server=ServerConfig.read(readers["server"]),
        ws=ListenerConfig.read(readers["ws"], default_port=8080),
        wss=ListenerConfig.read(readers["wss"], default_port=8443),
        tls=TLSConfig.read(readers["tls"]),
        transcripts=TranscriptConfig.read(readers["transcripts"]),
        history=HistoryConfig.read(readers["history"]),
        limits=LimitsConfig.read(readers["limits"]),
        metrics=MetricsConfig.read(readers["metrics"]),
        auth=AuthConfig.read(readers["auth"]),
        rooms=RoomsConfig.read(readers["rooms"], declared),
        support=SupportConfig.read(readers["support"]),
        api=ApiConfig.read(readers["api"]),
        webhooks=WebhooksConfig.read(readers["webhooks"], tuple(endpoints)),
        retention=RetentionConfig.read(readers["retention"]),
        redis=RedisConfig.read(readers["redis"]),
    )
    for reader in readers.values():
        reader.finish()
    _check_listeners(config)
    if config.support.trial_agents and config.auth.mode != "open":
        raise ConfigError(
            source, "support", "trial_agents", "only for [auth] mode = open; tokens carry roles"
        )
    return config


def _describe_parse_error(error: configparser.Error, text: str) -> str:
    if isinstance(error, configparser.MissingSectionHeaderError):
        return f"line {error.lineno}: a key outside any [section]"
    if isinstance(error, configparser.DuplicateSectionError):
        return f"line {error.lineno}: section [{error.section}] appears twice"
    if isinstance(error, configparser.DuplicateOptionError):
        return f"line {error.lineno}: [{error.section}] {error.option} appears twice"
    if isinstance(error, configparser.ParsingError):
        lineno, _quoted = error.errors[0]  # configparser keeps repr(line), newline included
        line = text.split("\n")[lineno - 1].strip()
        return f"line {lineno}: cannot parse {line!r}"
    return error.message


def _check_listeners(config: Config) -> None:
    if not config.listeners:
        raise ConfigError(
            config.source, "ws", "enabled", "both ws and wss are disabled; enable at least one"
        )
    if (
        config.ws.enabled
        and config.wss.enabled
        and config.ws.port != 0
        and (config.ws.interface, config.ws.port) == (config.wss.interface, config.wss.port)
    ):
        raise ConfigError(
            config.source, "wss", "port", f"{config.wss.port} is already used by [ws]"
        )
    metrics = config.metrics
    if metrics.enabled and metrics.serve_on != "local":
        listener = getattr(config, metrics.serve_on)
        if not listener.enabled:
            raise ConfigError(
                config.source, "metrics", "serve_on", f"[{listener.name}] is not enabled"
            )


def load_config(path: str | os.PathLike | None) -> Config:
    """Read the INI file at `path`, or the embedded defaults when `path` is None."""
    if path is None:
        return parse_config("", EMBEDDED_DEFAULTS)
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError(source, None, None, f"cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(source, None, None, "is not UTF-8 text") from None
    return parse_config(text, source)


def load_daemon_config(path: Path | None) -> Config:
    """The configuration `twistd chatd [--config path]` loads when started here."""
    return load_config(path or find_config_file(Path.cwd()))


def find_config_file(cwd: Path, system_path: Path = Path("/etc/chatd/chatd.ini")) -> Path | None:
    """The default config: `etc/chatd.ini` under the working directory, then the system one."""
    for candidate in (cwd / "etc" / "chatd.ini", system_path):
        if candidate.is_file():
            return candidate
    return None
