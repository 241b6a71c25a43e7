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
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^(\d+)\s*([KMG])?$", re.IGNORECASE)
_SIZE_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, None: 1}


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
        match = _DURATION.match(value)
        if match is None:
            raise self.error(key, f"must be a duration such as 30s, 500ms, 5m or 1h, got {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
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

    def path(self, key: str, default: str | None, must_exist: bool = False) -> Path | None:
        value = self._raw(key)
        if value is None:
            value = default
        if not value:
            return None
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

    @classmethod
    def read(cls, reader: SectionReader) -> ServerConfig:
        return cls(shutdown_timeout=reader.duration("shutdown_timeout", 10.0, 0.0, 3600.0))


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
            dev_directory=reader.path("dev_directory", "var/dev-tls"),
        )


@dataclass(frozen=True)
class TranscriptConfig:
    """Where room transcripts live and how hard each batch is pushed to disk."""

    directory: Path
    fsync: str
    rotate: str
    rotate_size: int

    @classmethod
    def read(cls, reader: SectionReader) -> TranscriptConfig:
        return cls(
            directory=reader.path("directory", "var/transcripts"),
            fsync=reader.choice("fsync", "no", ("no", "batch")),
            rotate=reader.choice("rotate", "daily", ("daily", "never")),
            rotate_size=reader.size("rotate_size", 0, 0, 2**40),
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
    """Per-message limits."""

    max_message_bytes: int
    max_text_chars: int
    retry_window: float

    @classmethod
    def read(cls, reader: SectionReader) -> LimitsConfig:
        return cls(
            max_message_bytes=reader.integer("max_message_bytes", 65536, 1024, 16 * 1024 * 1024),
            max_text_chars=reader.integer("max_text_chars", 4000, 1, 1_000_000),
            retry_window=reader.duration("retry_window", 300.0, 0.0, 86400.0),
        )


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

    @property
    def listeners(self) -> list[ListenerConfig]:
        return [listener for listener in (self.ws, self.wss) if listener.enabled]


EMBEDDED_DEFAULTS = "<embedded defaults>"
SECTIONS = ("server", "ws", "wss", "tls", "transcripts", "history", "limits", "metrics")


def parse_config(text: str, source: str) -> Config:
    """Parse INI text; `source` names the file in error messages."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.optionxform = str  # keys are case-sensitive: `Port` is a typo, not `port`
    try:
        parser.read_string(text, source=source)
    except configparser.Error as error:
        raise ConfigError(source, None, None, _describe_parse_error(error)) from None
    for section in parser.sections():
        if section not in SECTIONS:
            raise ConfigError(
                source, section, None, f"unknown section (known: {', '.join(SECTIONS)})"
            )
    readers = {
        name: SectionReader(source, name, dict(parser[name]) if parser.has_section(name) else {})
        for name in SECTIONS
    }
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
    )
    for reader in readers.values():
        reader.finish()
    _check_listeners(config)
    return config


def _describe_parse_error(error: configparser.Error) -> str:
    if isinstance(error, configparser.MissingSectionHeaderError):
        return f"line {error.lineno}: a key outside any [section]"
    if isinstance(error, configparser.DuplicateSectionError):
        return f"line {error.lineno}: section [{error.section}] appears twice"
    if isinstance(error, configparser.DuplicateOptionError):
        return f"line {error.lineno}: [{error.section}] {error.option} appears twice"
    if isinstance(error, configparser.ParsingError):
        lineno, line = error.errors[0]
        return f"line {lineno}: cannot parse {line.strip()!r}"
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


def find_config_file(cwd: Path, system_path: Path = Path("/etc/chatd/chatd.ini")) -> Path | None:
    """The default config: `etc/chatd.ini` under the working directory, then the system one."""
    for candidate in (cwd / "etc" / "chatd.ini", system_path):
        if candidate.is_file():
            return candidate
    return None
