"""A real `redis-server` for the tests of chatd's Redis mode: on a free port, in a temporary
directory, configured as chatd requires (append-only file fsynced on every write, no
eviction). It can be killed, restarted on the same port and data, frozen and thawed.

Debian's `redis-server` package provides the binary; `.ci/run` installs it. Without it the
tests that need it are skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import hiredis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    def __init__(self, directory: Path, **settings: str):
        self.directory = directory
        self.port = free_port()
        self.settings = {
            "appendonly": "yes",
            "appendfsync": "always",
            "maxmemory-policy": "noeviction",
            "save": '""',
            **settings,
        }
        self.process: subprocess.Popen | None = None
        self.log = directory / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        config = self.directory / "redis.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.directory}",
            f"logfile {self.log}",
            "daemonize no",
            *(f"{key} {value}" for key, value in self.settings.items()),
        ]
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [REDIS_SERVER, str(config)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if self.command("PING") == b"PONG":
                    return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                text = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise AssertionError(f"redis-server did not start:\n{text}")
            time.sleep(0.05)

    def command(self, *args, timeout: float = 5.0):
        """One command over a fresh connection: its reply (hiredis's types)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(hiredis.pack_command(args))
            reader = hiredis.Reader()
            while True:
                data = sock.recv(65536)
                if not data:
                    raise OSError("redis-server closed the connection")
                reader.feed(data)
                reply = reader.gets()
                if reply is not False:
                    if isinstance(reply, hiredis.ReplyError):
                        raise AssertionError(f"redis error: {reply}")
                    return reply

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def restart(self) -> RedisServer:
        """Kill and start again, on the same port and data directory."""
        self.kill()
        return self.start()
