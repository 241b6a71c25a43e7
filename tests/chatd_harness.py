"""The e2e harness: run `twistd -n chatd` as a subprocess and talk JSON to it over WebSocket.

Imported by conftest.py (fixtures) and the tests; named so as not to clash with other test
directories' helpers (tests/ has no __init__.py files, so test directories share sys.path).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

TWISTD = Path(sys.executable).parent / "twistd"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
RECV_TIMEOUT = 10.0  # generous: only a failing test waits this long
READY = re.compile(r"chatd (\w+) listener ready at (\w+)://([^\s/]+|\[[^\]]+\]):(\d+)/")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
EVENT_TYPES = ("message", "presence")


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval=0.02):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- the daemon ---------------------------------------------------------------------------------


def write_ini(path: Path, sections: dict[str, dict[str, object]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_twistd(
    config: Path, cwd: Path, log: Path, twistd: Path = TWISTD, preexec_fn=None
) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "wb") as output:
        return subprocess.Popen(
            [str(twistd), "--nodaemon", "--pidfile=", "chatd", "--config", str(config)],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=preexec_fn,  # e.g. to lower a resource limit for the daemon alone
        )


class Daemon:
    """One chatd directory and configuration; `start`, `stop`, `kill` and `restart` it."""

    def __init__(
        self,
        directory: Path,
        config: Path,
        transcripts: Path,
        ssl_context: ssl.SSLContext,
        twistd: Path = TWISTD,
    ):
        self.directory = directory
        self.config = config
        self.transcripts = transcripts
        self.ssl_context = ssl_context
        self.twistd = twistd
        self.process: subprocess.Popen | None = None
        self.logs: list[Path] = []
        self.ports: dict[str, int] = {}
        # The listeners whose "ready" lines `start` waits for (add "api" for the server API).
        self.listeners: set[str] = {"ws", "wss"}

    # -- lifecycle

    def start(self, preexec_fn=None) -> Daemon:
        assert self.process is None or self.process.poll() is not None, "already running"
        log = self.directory / f"chatd-{len(self.logs) + 1}.log"
        self.logs.append(log)
        self.ports = {}
        self.process = run_twistd(self.config, self.directory, log, self.twistd, preexec_fn)
        wait_for(self._ready, START_TIMEOUT, "both listeners to be ready", interval=0.05)
        return self

    def _ready(self) -> bool:
        text = self.logs[-1].read_text(errors="replace")
        found = {match[0]: int(match[3]) for match in READY.findall(text)}
        if self.listeners <= found.keys():
            self.ports = found
            return True
        if self.process.poll() is not None:
            raise AssertionError(
                f"chatd exited with {self.process.returncode} before it was ready:\n{text}"
            )
        return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, and the daemon must exit cleanly (code 0)."""
        assert self.running, "not running"
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"chatd ignored SIGTERM for {STOP_TIMEOUT}s:\n{self.log}"
            ) from None
        assert code == 0, f"chatd exited with {code} after SIGTERM:\n{self.log_of_last_start}"

    def kill(self) -> None:
        if self.running:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)

    def restart(self) -> Daemon:
        """Start again with the same configuration and directory (stopping first if needed)."""
        if self.running:
            self.stop()
        return self.start()

    # -- what it says

    @property
    def log(self) -> str:
        return "\n".join(
            f"----- {path.name} -----\n{path.read_text(errors='replace')}" for path in self.logs
        )

    @property
    def log_of_last_start(self) -> str:
        return self.logs[-1].read_text(errors="replace") if self.logs else ""

    def url(self, kind: str = "ws") -> str:
        """The WebSocket URL; wss uses the name `localhost`, which the certificate names."""
        host = "localhost" if kind == "wss" else "127.0.0.1"
        return f"{kind}://{host}:{self.ports[kind]}/ws"

    @property
    def urls(self) -> dict[str, str]:
        return {kind: self.url(kind) for kind in ("ws", "wss")}

    def http_url(self, kind: str, path: str) -> str:
        scheme = {"ws": "http", "wss": "https"}[kind]
        host = "localhost" if kind == "wss" else "127.0.0.1"
        return f"{scheme}://{host}:{self.ports[kind]}{path}"

    def get(self, kind: str, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) of a GET, with no proxy and only the test CA trusted."""
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=self.ssl_context),
        )
        with opener.open(self.http_url(kind, path), timeout=RECV_TIMEOUT) as response:
            return response.status, response.headers.get("content-type"), response.read()

    def transcript_path(self, room: str) -> Path:
        return self.transcripts / f"{room}.jsonl"

    def transcript_lines(self, room: str) -> list[str]:
        """The room's transcript, one string per line; every line must end with a newline."""
        data = self.transcript_path(room).read_bytes()
        assert data.endswith(b"\n"), f"torn or unterminated last line: {data[-200:]!r}"
        return data.decode("utf-8").split("\n")[:-1]

    def transcript(self, room: str) -> list[dict]:
        return [json.loads(line) for line in self.transcript_lines(room)]

    def transcript_files(self, room: str) -> list[Path]:
        """The current ROOM.jsonl and the rotated ROOM.<time>[-N].jsonl files, in no order."""
        pattern = re.compile(re.escape(room) + r"(\.[0-9TZ-]+)?\.jsonl")
        return [path for path in self.transcripts.iterdir() if pattern.fullmatch(path.name)]


def fill_up(directory: Path) -> Path:
    """Write a file until the file system is full; returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def mint_token(config: Path, user: str, *, ttl: float = 300, **options) -> str:
    """A token the daemon with this INI accepts, minted as `chatd token` does
    (chatd.auth.mint_token); options: roles, name, token_id, now."""
    from chatd.auth import mint_token as mint
    from chatd.config import load_config

    options.setdefault("roles", [])
    options.setdefault("now", time.time())
    return mint(load_config(config).auth, user, ttl=ttl, **options)


# -- clients ------------------------------------------------------------------------------------


class Client:
    """A JSON-speaking WebSocket client with bounded waits."""

    def __init__(
        self,
        url: str,
        ssl_context: ssl.SSLContext | None,
        name: str | None = None,
        max_queue: int | None = None,
        sock=None,
        compression: str | None = "deflate",
    ):
        """max_queue: frames buffered unread before the client stops reading its socket.
        compression: "deflate" offers permessage-deflate (websockets' default), None does not.

        Unbounded by default, so that a test that leaves frames unread still sees the server's
        close frame at once (websockets would wait close_timeout for it otherwise).
        """
        self.url = url
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            connect(
                url,
                ssl=ssl_context if url.startswith("wss:") else None,
                proxy=None,
                open_timeout=RECV_TIMEOUT,
                close_timeout=2,
                ping_interval=None,
                max_queue=max_queue,
                sock=sock,
                compression=compression,
            )
        )
        self.name = name
        self.received: list[dict] = []  # every frame received, in order
        self.raw: list[str] = []  # ... and its text as sent

    # -- sending

    def send(self, frame: dict) -> None:
        self.ws.send(json.dumps(frame))

    def send_raw(self, data: str | bytes, text: bool | None = None) -> None:
        self.ws.send(data, text=text)

    # -- receiving

    def recv_text(self, timeout: float = RECV_TIMEOUT) -> str:
        data = self.ws.recv(timeout=timeout)
        assert isinstance(data, str), f"the server sent a binary frame: {data!r}"
        return data

    def recv(self, timeout: float = RECV_TIMEOUT) -> dict:
        text = self.recv_text(timeout)
        frame = json.loads(text)
        assert isinstance(frame, dict), frame
        self.received.append(frame)
        self.raw.append(text)
        return frame

    def recv_until(self, predicate: Callable[[dict], bool], timeout: float = RECV_TIMEOUT):
        """Frames up to and including the first that matches; (match, frames before it)."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                frame = self.recv(max(remaining, 0))
            except TimeoutError:
                raise AssertionError(
                    f"no matching frame within {timeout}s; got {skipped!r}"
                ) from None
            if predicate(frame):
                return frame, skipped
            skipped.append(frame)

    def expect(self, **fields) -> dict:
        """The next frame, which must have these field values."""
        frame = self.recv()
        assert {key: frame.get(key) for key in fields} == fields, frame
        return frame

    def expect_closed(self, timeout: float = RECV_TIMEOUT) -> tuple[int, str]:
        """Read until the server closes; (close code, reason) of the server's close frame."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(ConnectionClosed):
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"the server did not close within {timeout}s")
                with contextlib.suppress(TimeoutError):
                    self.ws.recv(timeout=remaining)
        self.ws.close()
        rcvd = self.ws.close_exc.rcvd if self.ws.close_exc else None
        assert rcvd is not None, f"no close frame from the server: {self.ws.close_exc!r}"
        assert self.ws.close_code == rcvd.code
        return rcvd.code, rcvd.reason

    # -- the protocol

    def hello(self, name: str, **fields) -> dict:
        """`fields`: more of the hello frame (`secret`, `resume`)."""
        self.name = name
        self.send({"type": "hello", "name": name, **fields})
        return self.expect(type="welcome", user=name)

    def hello_token(self, token: str, **fields) -> dict:
        """Token mode: the welcome; the client's name is then the token's user."""
        self.send({"type": "hello", "token": token, **fields})
        welcome = self.expect(type="welcome")
        self.name = welcome["user"]
        return welcome

    def join(self, room: str, since: dict | None = None, own_presence: bool = True) -> dict:
        """The `joined` reply; with own_presence, also reads the joiner's presence event."""
        frame = {"type": "join", "room": room}
        if since is not None:
            frame["since"] = since
        self.send(frame)
        joined = self.expect(type="joined", room=room)
        if own_presence:
            presence = self.expect(type="presence", room=room, user=self.name, event="join")
            assert presence["seq"] == joined["seq"] + 1, (joined, presence)
            assert presence["epoch"] == joined["epoch"]
        return joined

    def say(self, room: str, text: str, id: str) -> tuple[dict, dict]:
        """Say, and read (skipping others' events) the message and then its ack."""
        self.send({"type": "say", "room": room, "text": text, "id": id})
        message, skipped = self.recv_until(
            lambda frame: frame["type"] == "message" and frame["from"] == self.name
        )
        assert all(frame["type"] in EVENT_TYPES for frame in skipped), skipped
        assert (message["room"], message["id"], message["text"]) == (room, id, text), message
        ack = self.expect(type="ack", id=id)
        assert ack == {"type": "ack", "id": id, "seq": message["seq"]}
        return message, ack

    def next_event(self, timeout: float = RECV_TIMEOUT) -> dict:
        frame = self.recv(timeout)
        assert frame["type"] in EVENT_TYPES, f"expected an event, got {frame!r}"
        return frame

    def close(self) -> None:
        self._stack.close()

    def abort(self) -> None:
        """Drop the connection with no WebSocket close frame (and no TLS close_notify): the
        TCP connection is shut down and reset, as when a client's process dies."""
        sock = self.ws.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # shutdown, not just close: it wakes websockets' reader thread, blocked in recv, which
        # would otherwise hold the socket open.
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        with contextlib.suppress(Exception):
            self._stack.close()


# -- frame checks -------------------------------------------------------------------------------


def assert_message(
    frame: dict, *, room: str, epoch: str, seq: int, sender: str, id: str, text, name=None
):
    """`name`: the sender's display name (in open mode, the default: the user id)."""
    assert TS.match(frame.get("ts", "")), frame
    assert frame == {
        "type": "message",
        "room": room,
        "epoch": epoch,
        "seq": seq,
        "ts": frame["ts"],
        "from": sender,
        "name": sender if name is None else name,
        "id": id,
        "text": text,
    }


def assert_presence(
    frame: dict, *, room: str, epoch: str, seq: int, user: str, event: str, name=None
):
    assert TS.match(frame.get("ts", "")), frame
    assert frame == {
        "type": "presence",
        "room": room,
        "epoch": epoch,
        "seq": seq,
        "ts": frame["ts"],
        "user": user,
        "name": user if name is None else name,
        "event": event,
    }


def assert_contiguous(events: list[dict], first: int | None = None) -> None:
    seqs = [event["seq"] for event in events]
    start = seqs[0] if first is None and seqs else first
    assert seqs == list(range(start, start + len(seqs))), seqs


# -- the server API -----------------------------------------------------------------------------


def api_call(
    port: int, method: str, path: str, body=None, key: str | None = None, raw: bytes | None = None
) -> tuple[int, dict]:
    """(status, JSON answer) of a server API request; `key` goes in a Bearer header."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    request.add_header("content-type", "application/json")
    if key is not None:
        request.add_header("authorization", f"Bearer {key}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=RECV_TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
