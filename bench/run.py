"""chatd's benchmark: start each server, drive it with the C load generator, print a table.

    python bench/run.py [--scenarios a,b,...] [--quick] [--compression] [--cores N]
                        [--servers chatd,autobahn,websockets,websockets-uvloop,node,c,
                                   chatd-redis,chatd-redis-x2,...]

Every (scenario, server) pair gets a freshly started server pinned to CPU 0 and the load
generator pinned to CPU 1; chatd-redis and chatd-redis-xN get a redis-server of their own and
1 or N chatd nodes, pinned as `Pinning.of` says. Each loadgen step and each scenario's summary
is appended as a JSON line to the results file; the table at the end gives chatd's figures as
ratios to the baselines measured in the same run. bench/README.md explains the method and every
figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BASELINES = BENCH / "baselines"
LOADGEN_SOURCE = BENCH / "loadgen" / "loadgen.c"
C_BASELINE_SOURCE = BASELINES / "c_broadcaster.c"
C_BASELINE_BINARY = BENCH / "build" / "c_broadcaster"
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = VENV_BIN / "python" if (VENV_BIN / "python").exists() else Path(sys.executable)
SERVERS = ("chatd", "autobahn", "websockets", "websockets-uvloop", "node", "c")
NO_TLS = {"c": "no TLS in the C baseline"}  # servers without wss: why their wss rows are skipped
NO_KEEPALIVE = {"c": "no keepalive in the C baseline"}  # ... and without pings: scenario k
NO_DEFLATE = {  # ... and without permessage-deflate: every scenario under --compression
    "autobahn": "no deflate in the Autobahn baseline",
    "c": "no deflate in the C baseline",
}
SERVER_CPU, LOADGEN_CPU = "0", "1"
# chatd in Redis mode: `chatd-redis` is one node, `chatd-redis-xN` N nodes (N >= 2), each with a
# redis-server of its own, started empty for every (scenario, server, transport).
REDIS_SERVER = re.compile(r"chatd-redis(?:-x([2-9]|[1-9]\d+))?")
REDIS_SETTINGS = ("appendonly yes", "appendfsync always", "maxmemory-policy noeviction")
NO_REDIS = {  # the scenario modes Redis mode does not run: why
    "idle": "idle connections touch no Redis: measured with chatd alone",
    "handshake": "handshakes touch no Redis: measured with chatd alone",
    "storm": "the storm restarts one process; Redis mode's restarts are tested in tests/",
    "hold": "one process up to the open-file limit: measured with chatd alone",
}
# --cores N: the cores the harness may pin onto, 0..N-1 (default: every core of the machine).
CORES = os.cpu_count() or 1
START_TIMEOUT = 30.0
# The checkout chatd runs from (its PYTHONPATH): this one, or --chatd DIR (e.g. an older commit
# checked out with `git worktree add`, to compare in one session with the same harness).
CHATD_ROOT = ROOT
# --chatd-set SECTION.KEY=VALUE: chatd configuration on top of the bench's, e.g. to see what a
# setting changes (limits.listen_backlog=4096) with the same harness in one session.
CHATD_SETTINGS: dict[str, dict[str, str]] = {}
READY_LINE = re.compile(r"chatd (\w+) listener ready at \w+://[^\s/]+:(\d+)/")
# Open files a scenario that goes up to the limit leaves to the server and the loadgen beside
# their connections: listeners, logs, epoll, and chatd's open rooms' transcripts (its own margin
# is 256, chatd/openfiles.py).
FD_HEADROOM = 300


# -- scenarios ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    mode: str  # the loadgen's --mode: chat, idle or handshake
    # Loadgen options at full scale, and with --quick; but `ping` is the servers' keepalive:
    # each pings every `ping` seconds with its own library's mechanism, pong timeout the same
    # (0: no pings at all; absent: each server's default, chatd's 30 s and none for baselines).
    full: dict
    quick: dict
    transports: tuple[str, ...] = ("ws",)
    servers: tuple[str, ...] = SERVERS
    fsync: str = "no"  # chatd's [transcripts] fsync
    restart: str | None = None  # storm mode: how the server is stopped, "term" or "kill"
    # `clients` is a ceiling: as many as the open-file limit leaves room for (FD_HEADROOM)
    up_to_limit: bool = False


FAN_OUT = dict(clients=1000, rooms=1, senders=1, rate=50, step_seconds=1.5, max_steps=8)
FAN_OUT_QUICK = dict(clients=20, rooms=1, senders=1, rate=20, step_seconds=0.5, max_steps=2)
# The reconnect storm: rooms of 10 with 5 messages each; every client resumes 5 events back.
STORM = dict(clients=10000, room_size=10, history=5, missed=5, rate=5000, hold_seconds=120)
STORM_QUICK = dict(clients=40, room_size=10, history=2, missed=1, rate=200, hold_seconds=60)

SCENARIOS = {
    s.key: s
    for s in [
        Scenario(
            "a",
            "fan-out: 1000 clients in one room, one sender; rate sweep",
            "chat",
            FAN_OUT,
            FAN_OUT_QUICK,
        ),
        Scenario(
            "b",
            "many-to-many: 100 clients in one room, each posting 10 msg/s, then a sweep",
            "chat",
            dict(clients=100, rooms=1, senders=100, rate=1000, step_seconds=1.5, max_steps=8),
            dict(clients=10, rooms=1, senders=10, rate=50, step_seconds=0.5, max_steps=2),
        ),
        Scenario(
            "c",
            "many rooms: 10,000 clients in 1,000 rooms of 10, every client posting; sweep",
            "chat",
            dict(
                clients=10000, rooms=1000, senders=10000, rate=1000, step_seconds=1.5, max_steps=8
            ),
            dict(clients=100, rooms=10, senders=100, rate=50, step_seconds=0.5, max_steps=2),
        ),
        Scenario(  # not in the default run: 10 s steps take a minute and a half per server
            "c10",
            "many rooms as (c), 10-second steps (long enough to include full collections)",
            "chat",
            dict(clients=10000, rooms=1000, senders=10000, rate=1000, step_seconds=10, max_steps=6),
            dict(clients=100, rooms=10, senders=100, rate=50, step_seconds=1, max_steps=1),
        ),
        Scenario(
            "d",
            "idle: server RSS per connection, 10,000 welcomed connections",
            "idle",
            dict(clients=10000, warmup=100),
            dict(clients=100, warmup=10),
            transports=("ws", "wss"),
        ),
        Scenario(
            "e",
            "handshakes: opening handshakes per second (full TLS handshakes for wss)",
            "handshake",
            dict(concurrency=32, duration=4),
            dict(concurrency=8, duration=1),
            transports=("ws", "wss"),
        ),
        Scenario(
            "er",
            "handshakes as (e), wss with TLS session resumption (a returning client's)",
            "handshake",
            dict(concurrency=32, duration=4, resume=True),
            dict(concurrency=8, duration=1, resume=True),
            transports=("wss",),
        ),
        Scenario(
            "f",
            "fan-out as (a), chatd with [transcripts] fsync = batch",
            "chat",
            FAN_OUT,
            FAN_OUT_QUICK,
            servers=("chatd",),
            fsync="batch",
        ),
        Scenario(
            "cpu",
            "server CPU per delivery at a fixed 20k deliveries/s (fan-out, 20 msg/s x 1000)",
            "chat",
            dict(clients=1000, rooms=1, senders=1, rate=20, step_seconds=6, max_steps=1),
            dict(clients=20, rooms=1, senders=1, rate=20, step_seconds=1, max_steps=1),
            transports=("ws", "wss"),  # wss: what most deployments run, TLS per member
        ),
        Scenario(
            "k",
            "keepalive: server CPU holding 10,000 idle connections pinged every 5 s",
            "idle",
            dict(clients=10000, warmup=0, window_seconds=20, ping=5),
            dict(clients=50, warmup=0, window_seconds=3, ping=1),
        ),
        Scenario(
            "r",
            "reconnect storm: 10,000 clients in rooms of 10 resume after a restart (SIGTERM)",
            "storm",
            STORM,
            STORM_QUICK,
            transports=("ws", "wss"),
            restart="term",
        ),
        Scenario(
            "r9",
            "reconnect storm: as (r), the server killed with SIGKILL",
            "storm",
            STORM,
            STORM_QUICK,
            transports=("ws", "wss"),
            restart="kill",
        ),
        Scenario(
            "m",
            "connections up to the open-file limit (at most 100,000), joined and idle, pinged"
            " every 5 s; then fan-out to a 1,000-member room",
            "hold",
            dict(
                clients=100_000,
                room_size=100,
                first_room=1000,
                sources=4,
                warmup=1000,
                window_seconds=20,
                ping=5,
                rate=20,
                step_seconds=6,
            ),
            dict(
                clients=60,
                room_size=10,
                first_room=20,
                sources=2,
                warmup=10,
                window_seconds=2,
                ping=1,
                rate=20,
                step_seconds=1,
            ),
            up_to_limit=True,
        ),
        Scenario(  # not in the default run: it would add as much time again as (k)
            "k0",
            "keepalive off: server CPU holding 10,000 idle connections, no pings (for k)",
            "idle",
            dict(clients=10000, warmup=0, window_seconds=10, ping=0),
            dict(clients=50, warmup=0, window_seconds=3, ping=0),
        ),
    ]
}
DEFAULT_SCENARIOS = ("a", "b", "c", "d", "e", "er", "f", "cpu", "k")


# -- the environment ------------------------------------------------------------------------------


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine_facts() -> dict:
    model = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "model_name": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


def package_versions() -> dict:
    code = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({p: m.version(p) for p in"
        " ('twisted', 'autobahn', 'websockets', 'uvloop')}))"
    )
    versions = json.loads(subprocess.check_output([str(PYTHON), "-c", code], text=True))
    if cc := shutil.which("cc") or shutil.which("gcc"):
        versions["cc"] = subprocess.check_output([cc, "--version"], text=True).splitlines()[0]
    if shutil.which("node"):
        versions["node"] = subprocess.check_output(["node", "--version"], text=True).strip()
        lock = BASELINES / "node_modules" / "ws" / "package.json"
        if lock.exists():
            versions["ws"] = json.loads(lock.read_text())["version"]
    return versions


def chatd_revision(root: Path = ROOT) -> str:
    """The checkout's commit, and `+dirty` when chatd/ has uncommitted changes."""
    try:
        head = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True)
        status = subprocess.check_output(
            ["git", "status", "--porcelain", "--", "chatd", "twisted"], cwd=root, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head.strip() + ("+dirty" if status.strip() else "")


def build_loadgen(out_dir: Path) -> tuple[Path | None, bool, str]:
    """(binary or None, built with TLS, why not/how); rebuilt when the source is newer."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, False, "no C compiler (cc) on PATH"
    out_dir.mkdir(parents=True, exist_ok=True)
    attempts = [
        ("tls", ["-DWITH_TLS"], ["-lssl", "-lcrypto", "-lz", "-lm"]),
        ("plain", [], ["-lz", "-lm"]),
    ]
    errors = []
    for flavour, defines, libs in attempts:
        binary = out_dir / f"loadgen-{flavour}"
        if binary.exists() and binary.stat().st_mtime >= LOADGEN_SOURCE.stat().st_mtime:
            return binary, flavour == "tls", f"{cc} -O2 ({flavour})"
        partial = binary.with_suffix(f".{os.getpid()}.tmp")
        command = [cc, "-O2", "-Wall", *defines, "-o", str(partial), str(LOADGEN_SOURCE), *libs]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0:
            os.replace(partial, binary)
            return binary, flavour == "tls", " ".join(command)
        errors.append(result.stderr.strip()[-300:])
    return None, False, "the loadgen does not compile: " + " | ".join(errors)


def build_c_baseline(binary: Path) -> tuple[Path | None, str]:
    """(binary or None, how it was built or why not); rebuilt when the source is newer."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc) on PATH"
    command = [cc, "-O2", "-Wall", "-o", str(binary), str(C_BASELINE_SOURCE), "-lcrypto"]
    if binary.exists() and binary.stat().st_mtime >= C_BASELINE_SOURCE.stat().st_mtime:
        return binary, " ".join(command)
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(f".{os.getpid()}.tmp")
    command[command.index(str(binary))] = str(partial)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        os.replace(partial, binary)
        return binary, " ".join(command).replace(str(partial), str(binary))
    partial.unlink(missing_ok=True)
    if "openssl/" in result.stderr or "-lcrypto" in result.stderr:
        return None, "no OpenSSL libcrypto headers (libssl-dev) to build the C baseline"
    return None, "the C baseline does not compile: " + result.stderr.strip()[-300:]


def free_port() -> int:
    """A port free now on 127.0.0.1, for a server that must come back on the same one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2 and CORES >= 2


def pinned(cpu: str | None, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if cpu and can_pin() else command


def redis_nodes(server: str) -> int | None:
    """How many chatd nodes a Redis-mode server name stands for; None: not Redis mode."""
    match = REDIS_SERVER.fullmatch(server)
    return None if match is None else int(match.group(1) or 1)


@dataclass(frozen=True)
class Pinning:
    """Which cores each process of a (scenario, server) may run on (taskset -c lists)."""

    servers: tuple[str, ...]  # one per server process (chatd node)
    loadgen: str | None
    redis: str | None
    measured: str | None  # the servers' cores when they have them to themselves (`others`)
    shared: str  # what shares a core, said plainly; empty when every process has its own

    @classmethod
    def of(cls, processes: int = 1, redis: bool = False) -> Pinning:
        """A core of its own for each server process when --cores leaves one more for the
        loadgen; redis-server on the cores after that, else beside the loadgen. With fewer
        cores, the processes take them in turn and the loadgen and redis-server may run on any:
        the figures are then bound by the cores, not by the processes."""
        if not can_pin():
            return cls((None,) * processes, None, None, None, "not pinned")
        cores = [str(core) for core in range(CORES)]
        if processes == 1 and not redis:  # the plain servers, as ever
            return cls((SERVER_CPU,), LOADGEN_CPU, None, SERVER_CPU, "")
        if processes + 1 <= CORES:
            servers, loadgen, rest = cores[:processes], cores[processes], cores[processes + 1 :]
            shared = "" if rest else f"redis-server shares core {loadgen} with the loadgen"
            redis_cores = ",".join(rest) or loadgen
            return cls(tuple(servers), loadgen, redis_cores, ",".join(servers), shared)
        anywhere = ",".join(cores)
        return cls(
            tuple(cores[i % CORES] for i in range(processes)),
            anywhere,
            anywhere,
            None,
            f"core-bound: {processes} chatd processes, redis-server and the loadgen share"
            f" {CORES} cores",
        )

    def describe(self) -> str:
        if not self.loadgen:
            return self.shared
        what = "chatd nodes" if len(self.servers) > 1 else "server"
        servers = ", ".join(f"-c {core}" for core in self.servers)
        redis = f", redis-server -c {self.redis}" if self.redis else ""
        shared = f"; {self.shared}" if self.shared else ""
        return f"{what} {servers}, loadgen -c {self.loadgen}{redis}{shared}"


def node_ready() -> str | None:
    """None when the Node baseline can run, else why not."""
    if not shutil.which("node"):
        return "node is not installed"
    if not (BASELINES / "node_modules" / "ws").exists():
        if not shutil.which("npm"):
            return "bench/baselines/node_modules is missing and npm is not installed"
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"],
            cwd=BASELINES,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if result.returncode != 0:
            return f"npm ci failed: {result.stderr.strip()[-300:]}"
    return None


def make_certificate(directory: Path) -> tuple[Path, Path]:
    import trustme

    server = trustme.CA().issue_cert("localhost", "127.0.0.1")
    cert, key = directory / "cert.pem", directory / "key.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    return cert, key


# -- servers --------------------------------------------------------------------------------------


@dataclass
class Running:
    name: str
    process: subprocess.Popen
    port: int
    log: Path
    command: list[str]  # what started it, to start it again (restart)
    env: dict
    transport: str
    metrics_port: int | None = None  # chatd's: its ws listener serves /metrics

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ports(self) -> list[int]:
        return [self.port]

    @property
    def pids(self) -> list[int]:
        return [self.pid]

    redis_pid = None

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))

    def restart(self, how: str) -> dict:
        """Stop the server (SIGTERM, or SIGKILL when `how` is "kill") and start the same
        command again: same port, same working directory (chatd: the same transcripts).
        Returns how long each half took, from the signal to the exit and then to ready."""
        signalled = time.monotonic()
        self.process.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        stopped = time.monotonic()
        exit_code = self.process.returncode
        log = self.log.with_suffix(".restarted.log")
        again = launch(self.name, self.transport, self.command, self.env, self.log.parent, log)
        if again.port != self.port:
            again.stop()
            raise RuntimeError(f"{self.name} came back on port {again.port}, not {self.port}")
        self.process, self.log = again.process, again.log
        return dict(
            restart=how,
            exit_code=exit_code,
            stop_s=round(stopped - signalled, 3),
            start_s=round(time.monotonic() - stopped, 3),
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def chatd_config(
    work: Path,
    cert: Path,
    key: Path,
    fsync: str,
    ping: float | None,
    compression: bool,
    ports: dict[str, int],
    max_connections: int,
    redis: dict[str, str] | None = None,
    name: str = "chatd.ini",
) -> Path:
    """`ports`: the fixed port of a transport (a restart must come back on it), else 0;
    `redis`: the node's [redis] section (Redis mode)."""
    sections = {
        "ws": {"port": ports.get("ws", 0)},
        "wss": {"port": ports.get("wss", 0)},
        "tls": {"certificate": cert, "key": key},
        "transcripts": {"directory": work / "transcripts", "fsync": fsync},
        # On the ws listener, for the harness to read the longest collector pause at the end.
        "metrics": {"serve_on": "ws"},
        # Every client comes from 127.0.0.1 and the load is the point: lift the abuse limits.
        "limits": {
            "max_connections": max_connections,
            "max_connections_per_ip": 1_000_000,
            "messages_per_second": 1_000_000,
            "message_burst": 1_000_000,
            "flood_close_after": 1_000_000,
        },
    }
    if ping is not None:  # scenario k's keepalive (0: off); else chatd's default, 30 s / 10 s
        sections["limits"]["ping_interval"] = f"{ping:g}s"
        if ping > 0:
            sections["limits"]["ping_timeout"] = f"{ping:g}s"
    if compression:
        sections["limits"]["compression"] = "yes"
    if redis:
        sections["redis"] = redis
    for section, values in CHATD_SETTINGS.items():
        sections.setdefault(section, {}).update(values)
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) + "\n"
        for name, values in sections.items()
    )
    path = work / name
    path.write_text(text, encoding="utf-8")
    return path


def start_server(
    name: str,
    transport: str,
    work: Path,
    cert: Path,
    key: Path,
    fsync: str = "no",
    ping: float | None = None,
    compression: bool = False,
    port: int = 0,
    max_connections: int = 20000,
    pinning: Pinning | None = None,
) -> Running | Cluster:
    """`ping`: keepalive every `ping` seconds (0 or None: the baselines' default, none);
    `compression`: permessage-deflate (not for the servers in NO_DEFLATE); `port`: listen
    there (0: any free port); `max_connections`: chatd's [limits] max_connections;
    `pinning`: the cores (default: the plain servers' core)."""
    work.mkdir(parents=True, exist_ok=True)
    pinning = pinning or Pinning.of(redis_nodes(name) or 1, redis_nodes(name) is not None)
    if redis_nodes(name):
        settings = (fsync, ping, compression, {}, max_connections)
        return start_cluster(name, transport, work, cert, key, settings, pinning)
    tls = ["--tls", str(cert), str(key)] if transport == "wss" else []
    fixed = ["--port", str(port)] if port else []
    keepalive = ["--ping", f"{ping:g}"] if ping else []
    deflate = ["--deflate"] if compression else []
    if compression and name in NO_DEFLATE:
        raise RuntimeError(NO_DEFLATE[name])
    if name == "chatd":
        ports = {transport: port} if port else {}
        config = chatd_config(work, cert, key, fsync, ping, compression, ports, max_connections)
        command, env = chatd_command(config)
        return launch(name, transport, command, env, work, work / f"{name}-{transport}.log")
    elif name == "autobahn":
        command = [str(PYTHON), str(BASELINES / "autobahn_prepared.py"), *fixed, *tls]
        command += keepalive
    elif name in ("websockets", "websockets-uvloop"):
        command = [
            str(PYTHON),
            str(BASELINES / "websockets_broadcast.py"),
            *fixed,
            *tls,
            *keepalive,
            *deflate,
        ]
        if name == "websockets-uvloop":
            command.append("--uvloop")
    elif name == "c":
        if tls:
            raise RuntimeError(NO_TLS[name])
        if keepalive:
            raise RuntimeError(NO_KEEPALIVE[name])
        command = [str(C_BASELINE_BINARY), *fixed]
    else:
        command = ["node", str(BASELINES / "node_ws.js"), *fixed, *tls, *keepalive, *deflate]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return launch(name, transport, command, env, work, work / f"{name}-{transport}.log")


def chatd_command(config: Path) -> tuple[list[str], dict]:
    """twistd running the checkout's chatd (and finding its plugin) whatever is installed."""
    command = [str(PYTHON.parent / "twistd"), "--nodaemon", "--pidfile=", "chatd"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHATD_ROOT), env.get("PYTHONPATH")]))
    return [*command, "--config", str(config)], env


@dataclass
class Cluster:
    """chatd in Redis mode: a redis-server of its own (empty: the bench's clients reuse their
    names and message ids, which a Redis that remembered them would answer as retries) and the
    chatd nodes sharing rooms through it."""

    redis: subprocess.Popen
    nodes: list[Running] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def pid(self) -> int:
        return self.nodes[0].pid

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes]

    @property
    def redis_pid(self) -> int:
        return self.redis.pid

    @property
    def metrics_port(self) -> int | None:  # the first node's collector pauses stand for all
        return self.nodes[0].metrics_port if self.nodes else None

    def stop(self) -> None:
        for node in self.nodes:  # before Redis, so that they leave cleanly
            node.stop()
        self.redis.terminate()
        try:
            self.redis.wait(15)
        except subprocess.TimeoutExpired:
            self.redis.kill()
            self.redis.wait(5)


def start_redis(directory: Path, cpus: str | None) -> tuple[subprocess.Popen, int]:
    """An empty redis-server in `directory` with the durability chatd requires (REDIS_SETTINGS,
    no snapshots); (its process, its port) once it answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / "redis.conf"
    lines = [f"port {port}", "bind 127.0.0.1", f"dir {directory}", 'save ""', *REDIS_SETTINGS]
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log = directory / "redis.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            pinned(cpus, [binary, str(conf)]),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(b"PING\r\n")
                if probe.recv(64).startswith(b"+PONG"):
                    return process, port
        except OSError:
            time.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait(5)
    raise RuntimeError(f"redis-server did not start:\n{log.read_text(errors='replace')[-2000:]}")


def start_cluster(
    name: str, transport: str, work: Path, cert: Path, key: Path, settings: tuple, pinning: Pinning
) -> Cluster:
    """A redis-server, then one chatd node per core of `pinning.servers`, one after the other,
    sharing `work` (one transcript directory, written by whichever node holds the archiver's
    lease). `settings`: chatd_config's (fsync, ping, compression, ports, max_connections)."""
    redis, port = start_redis(work / "redis", pinning.redis)
    cluster = Cluster(redis)
    try:
        for i, cpu in enumerate(pinning.servers):
            node = f"bench{i}"
            redis_section = {"url": f"redis://127.0.0.1:{port}/0", "node": node}
            config = chatd_config(work, cert, key, *settings, redis_section, f"{node}.ini")
            command, env = chatd_command(config)
            log = work / f"{name}-{node}-{transport}.log"
            cluster.nodes.append(launch("chatd", transport, command, env, work, log, cpu))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def launch(
    name: str,
    transport: str,
    command: list[str],
    env: dict,
    work: Path,
    log: Path,
    cpu: str | None = SERVER_CPU,
) -> Running:
    """Start a server pinned to `cpu`, its output to `log`; return once it listens."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            pinned(cpu, command),
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if name == "chatd":
            ports = {match[0]: int(match[1]) for match in READY_LINE.findall(text)}
            port = ports.get(transport) if {"ws", "wss"} <= ports.keys() else None
        else:
            match = re.search(r"^READY (\d+)", text, re.M)
            port = int(match.group(1)) if match else None
        if port:
            return Running(
                name,
                process,
                port,
                log,
                command,
                env,
                transport,
                ports.get("ws") if name == "chatd" else None,
            )
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} at start:\n{text[-2000:]}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{name} was not ready within {START_TIMEOUT}s")


# -- the load generator ---------------------------------------------------------------------------


def loadgen_command(
    loadgen: Path,
    scenario: Scenario,
    options: dict,
    server: Running | Cluster,
    tls: bool,
    deflate: bool,
    pinning: Pinning,
):
    """Several servers (chatd nodes): their ports, each room's members spread over them, their
    CPU summed, and redis-server's apart."""
    command = [str(loadgen), "--mode", scenario.mode]
    command += ["--port", ",".join(map(str, server.ports))]
    command += ["--server-pid", ",".join(map(str, server.pids))]
    if pinning.measured:
        command += ["--server-core", pinning.measured]
    if server.redis_pid:
        command += ["--redis-pid", str(server.redis_pid)]
    for option, value in options.items():
        flag = f"--{option.replace('_', '-')}"
        command += [flag] if value is True else [flag, str(value)]
    if tls:
        command.append("--tls")
    if deflate:
        command.append("--deflate")
    return pinned(pinning.loadgen, command)


def run_loadgen(
    command: list[str], server: Running, max_seconds: float, restart: str | None = None
) -> list[dict]:
    """The loadgen's JSON lines. In idle and hold modes it pauses for us to read the server's
    RSS; in storm mode (`restart`) for us to restart the server, then reconnects."""
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(max_seconds + 15, process.kill)
    watchdog.start()
    lines = []
    try:
        for raw in process.stdout:
            line = json.loads(raw)
            if line.get("phase") in ("connect", "step") and server.metrics_port:
                line["gc"] = collector_pauses(server)  # to tell each step's pauses apart
            if line.get("phase") in ("warm", "idle"):
                time.sleep(1.0)  # let the server finish what the last connections started
                line["server_rss_kib"] = server.rss_kib()
                process.stdin.write("\n")
                process.stdin.flush()
            elif line.get("phase") == "armed":
                line.update(server.restart(restart))
                process.stdin.write(f"go {server.pid}\n")
                process.stdin.flush()
            lines.append(line)
        process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read()
    if process.returncode != 0 or not lines or lines[-1].get("phase") != "done":
        raise RuntimeError(f"loadgen failed (exit {process.returncode}): {stderr.strip()[-800:]}")
    if stderr.strip():
        print(f"    loadgen: {stderr.strip().splitlines()[0]}", file=sys.stderr)
    return lines


def collector_pauses(server: Running) -> dict | None:
    """chatd's garbage-collection pauses so far, from its /metrics (chatd/gcwatch.py): the
    longest, and the histogram's cumulative counts by (generation, bucket's upper bound)."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    except OSError as error:
        print(f"    cannot read chatd's collector pauses from {url}: {error}", file=sys.stderr)
        return None
    longest = re.search(r"^chatd_gc_longest_pause_seconds (\S+)$", text, re.M)
    if longest is None:  # a chatd from before gcwatch.py (--chatd)
        return None
    buckets = re.findall(
        r'^chatd_gc_pause_seconds_bucket\{generation="(\d)",le="([^"]+)"\} (\S+)$', text, re.M
    )
    return {
        "longest_s": float(longest.group(1)),
        "counts": {(int(g), float(le)): float(n) for g, le, n in buckets},
    }


def pauses_between(before: dict | None, after: dict) -> tuple[int, float]:
    """Full collections between two readings of chatd's /metrics, and the upper bound of the
    histogram bucket of the longest pause of any generation between them (0: none)."""
    earlier = before["counts"] if before else {}
    new = {key: n - earlier.get(key, 0) for key, n in after["counts"].items()}
    longest = 0.0
    for (generation, bound), n in new.items():
        below = max((b for g, b in new if g == generation and b < bound), default=None)
        if n > (new[generation, below] if below is not None else 0):
            longest = max(longest, bound)
    return int(new.get((2, float("inf")), 0)), 1000 * longest


def pause_figures(at_connect: dict | None, at_end: dict | None) -> dict:
    """The longest pause over the whole run, and what the collector did after the clients had
    connected (during the steps)."""
    if at_end is None:
        return {}
    figures = {
        "gc_longest_pause_ms": round(1000 * at_end["longest_s"], 1),
        "gc_full_collections": pauses_between(None, at_end)[0],
    }
    if at_connect is None:
        return figures
    full, longest = pauses_between(at_connect, at_end)
    return figures | {
        "gc_full_collections_after_connect": full,
        "gc_longest_pause_after_connect_ms_at_most": longest,
    }


def per_message(step: dict) -> dict:
    """CPU per message sent (the server's, over all its processes, and redis-server's apart in
    Redis mode), which Redis's cost is counted in: one script call and one pub/sub message per
    message, whatever the room's size; and the kernel's part of the server's CPU per delivery."""

    def us(seconds: float) -> float | None:
        return round(seconds * 1e6 / step["sent"], 1) if seconds >= 0 and step["sent"] else None

    figures = {"server_cpu_us_per_message": us(step["server_cpu_s"])}
    if step["server_sys_s"] >= 0 and step["received"]:
        # the kernel's part of µs/deliv: the same sends cost every server about the same there
        figures["server_sys_us_per_delivery"] = round(
            step["server_sys_s"] * 1e6 / step["received"], 2
        )
    if "redis_cpu_s" in step:
        figures.update(
            redis_cpu_us_per_delivery=step["redis_cpu_us_per_delivery"],
            redis_cpu_us_per_message=us(step["redis_cpu_s"]),
        )
    return figures


def summarize(scenario: Scenario, lines: list[dict]) -> dict:
    """The figures the table shows, from the loadgen's lines for one server and transport."""
    done = lines[-1]
    summary = {
        "loadgen_cpu_s": round(done["loadgen_user_s"] + done["loadgen_sys_s"], 3),
        "wall_s": done["wall_s"],
        "connect_failures": done["connect_failures"],
    }
    if "deflate_accepted" in done:  # the loadgen ran with --deflate
        compressed, plain = done["compressed_bytes"], done["plain_bytes"]
        wire, text = compressed + plain, done["inflated_bytes"] + plain
        summary.update(
            {
                key: done[key]
                for key in (
                    "deflate_accepted",
                    "deflate_declined",
                    "compressed_messages",
                    "compressed_bytes",
                    "inflated_bytes",
                    "plain_messages",
                    "plain_bytes",
                )
            },
            text_per_wire_byte=round(text / wire, 3) if wire else None,
        )
    if scenario.mode == "chat":
        steps = [line for line in lines if line["phase"] == "step" and not line["repeated"]]
        passed = [step for step in steps if step["ok"]]
        best = max(passed, key=lambda step: step["delivered_dps"], default=None)
        first = steps[0] if steps else None
        connect = next((line for line in lines if line["phase"] == "connect"), {})
        summary.update(
            clients=connect.get("ready"),
            connect_s=connect.get("seconds"),
            steps=len(steps),
            sent=done["sent"],
            expected=done["expected"],
            received=done["received"],
            lost=done["lost"],
            dups=done["dups"],
            gaps=done["gaps"],
            errors=done["errors"],
            dropped=done["dropped"],
            first_close=done["first_close"],
            all_delivered=done["lost"] == 0 and done["dups"] == 0 and done["gaps"] == 0,
        )
        if "ready_per_port" in connect:  # several servers: the clients each held
            summary["clients_per_server"] = connect["ready_per_port"]
        # Every step's rate and cost, to compare two servers at the rates both were sent.
        summary["peak_delivered_dps"] = max((step["delivered_dps"] for step in steps), default=0)
        summary["by_rate"] = [
            {"rate": step["rate"], "ok": step["ok"]} | per_message(step) for step in steps
        ]
        for label, step in (("max", best), ("first", first)):
            if step is None:
                continue
            summary[label] = {
                key: step[key]
                for key in (
                    "rate",
                    "delivered_dps",
                    "p50_ms",
                    "p99_ms",
                    "server_cpu_us_per_delivery",
                    "loadgen_cpu_pct",
                    "core_others_pct",
                )
            } | per_message(step)
    elif scenario.mode == "storm":
        armed = next(line for line in lines if line["phase"] == "armed")
        storm = next(line for line in lines if line["phase"] == "storm")
        history = next((line for line in lines if line["phase"] == "step"), {})
        summary.update(
            {k: v for k, v in storm.items() if k != "phase"},
            rooms=armed["rooms"],
            restart=armed["restart"],
            exit_code=armed["exit_code"],
            stop_s=armed["stop_s"],
            start_s=armed["start_s"],
            # from the signal to the last client back: what a user of the site waits at most
            down_s=round(armed["stop_s"] + armed["start_s"] + storm["back_s"], 3)
            if storm["back_s"] >= 0
            else None,
            history_sent=history.get("sent", 0),
            history_lost=history.get("lost", 0),
        )
    elif scenario.mode in ("idle", "hold"):
        warm = next((line for line in lines if line["phase"] == "warm"), None)
        idle = next(line for line in lines if line["phase"] == "idle")
        window = next((line for line in lines if line["phase"] == "window"), None)
        summary["connections"] = idle["ready"]
        if warm is not None:
            added = idle["ready"] - warm["ready"]
            grown = idle["server_rss_kib"] - warm["server_rss_kib"]
            summary.update(
                rss_before_kib=warm["server_rss_kib"],
                rss_after_kib=idle["server_rss_kib"],
                kib_per_connection=round(grown / added, 2) if added > 0 else None,
            )
        else:
            summary["rss_kib"] = idle["server_rss_kib"]
        if window is not None:
            held = window["connections_at_start"]
            summary.update(
                window_s=window["seconds"],
                connections_at_end=window["connections"],
                pings=window["pings"],
                pings_per_connection=round(window["pings"] / held, 2) if held else None,
                server_cpu_s=window["server_cpu_s"],
                server_user_s=window["server_user_s"],
                server_sys_s=window["server_sys_s"],
                server_cpu_pct=window["server_cpu_pct"],
                server_cpu_us_per_ping=window["server_cpu_us_per_ping"]
                if window["server_cpu_us_per_ping"] >= 0
                else None,
                loadgen_cpu_pct=window["loadgen_cpu_pct"],
                core_others_pct=window["core_others_pct"],
                core_irq_pct=window["core_irq_pct"],
                window_dropped=window["dropped"],
            )
        if scenario.mode == "hold":
            fanout = next(line for line in lines if line["phase"] == "fanout")
            step = next(line for line in lines if line["phase"] == "step")
            summary.update(
                room_members=fanout["room_members"],
                fanout={
                    key: step[key]
                    for key in (
                        "rate",
                        "sent",
                        "expected",
                        "received",
                        "lost",
                        "delivered_dps",
                        "p50_ms",
                        "p99_ms",
                        "max_ms",
                        "server_cpu_us_per_delivery",
                    )
                },
                dropped=done["dropped"],
                connect_s=next(line for line in lines if line["phase"] == "connect")["seconds"],
            )
    else:
        result = next(line for line in lines if line["phase"] == "handshake")
        summary.update(
            {k: v for k, v in result.items() if k != "phase"},
            server_cpu_ms_per_handshake=round(
                1000 * result["server_cpu_s"] / result["handshakes"], 3
            )
            if result["handshakes"]
            else None,
            server_sys_ms_per_handshake=round(
                1000 * result["server_sys_s"] / result["handshakes"], 3
            )
            if result["handshakes"] and result["server_sys_s"] >= 0
            else None,
        )
    return summary


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Run:
    results: Path
    quick: bool
    loadgen: Path
    tls: bool
    cert: Path
    key: Path
    work: Path
    deadline: float  # time.monotonic() after which no further server is started
    compression: bool  # permessage-deflate on every server and client (--compression)
    fd_limit: int  # the soft open-file limit the servers and the loadgen inherit
    run_id: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    summaries: dict = field(default_factory=dict)  # (scenario, server, transport) -> summary
    skipped: list = field(default_factory=list)

    def record(self, **record) -> None:
        record = {"run": self.run_id, "time": datetime.now(UTC).isoformat(), **record}
        with open(self.results, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")

    def scenario(self, scenario: Scenario, servers: list[str]) -> None:
        options = dict(scenario.quick if self.quick else scenario.full)
        ping = options.pop("ping", None)  # the servers' keepalive, not a loadgen option
        options["max_seconds"] = 60 if self.quick else 240
        if self.quick:
            options.update(drain_seconds=2, settle_seconds=2)
        if scenario.up_to_limit and self.fd_limit - FD_HEADROOM < options["clients"]:
            options["clients"] = self.fd_limit - FD_HEADROOM
            print(f"  the open-file limit is {self.fd_limit}: {options['clients']:,} connections")
        for transport in scenario.transports:
            if transport == "wss" and not self.tls:
                self.skip(scenario.key, "*", transport, "the loadgen was built without TLS")
                continue
            for name in servers:
                # Redis mode runs the scenarios every server runs (not f: the fsync of chatd's
                # own transcripts, which in Redis mode are not on the acknowledgement's path)
                everyone = redis_nodes(name) and scenario.servers == SERVERS
                if name not in scenario.servers and not everyone:
                    continue
                if transport == "wss" and name in NO_TLS:
                    self.skip(scenario.key, name, transport, NO_TLS[name])
                    continue
                if ping and name in NO_KEEPALIVE:
                    self.skip(scenario.key, name, transport, NO_KEEPALIVE[name])
                    continue
                if self.compression and name in NO_DEFLATE:
                    self.skip(scenario.key, name, transport, NO_DEFLATE[name])
                    continue
                if redis_nodes(name) and scenario.mode in NO_REDIS:
                    self.skip(scenario.key, name, transport, NO_REDIS[scenario.mode])
                    continue
                self.one(scenario, name, transport, options, ping)

    def one(
        self, scenario: Scenario, name: str, transport: str, options: dict, ping: float | None
    ) -> None:
        label = f"({scenario.key}) {name} {self.label(transport)}"
        if time.monotonic() > self.deadline:
            self.skip(scenario.key, name, transport, "the run's --budget was spent")
            return
        print(f"  {label} ...", end="", flush=True)
        started = time.monotonic()
        work = self.work / f"{scenario.key}-{name}-{transport}"
        loadavg = os.getloadavg()[0]
        pinning = Pinning.of(redis_nodes(name) or 1, redis_nodes(name) is not None)
        try:
            server = start_server(
                name,
                transport,
                work,
                self.cert,
                self.key,
                scenario.fsync,
                ping,
                self.compression,
                port=free_port() if scenario.restart else 0,
                max_connections=options["clients"] if scenario.up_to_limit else 20000,
                pinning=pinning,
            )
        except RuntimeError as error:
            print(" failed to start")
            self.skip(scenario.key, name, transport, str(error))
            return
        try:
            command = loadgen_command(
                self.loadgen,
                scenario,
                options,
                server,
                transport == "wss",
                self.compression,
                pinning,
            )
            lines = run_loadgen(command, server, options["max_seconds"], scenario.restart)
            pauses = pause_figures(
                next((line.get("gc") for line in lines if line["phase"] == "connect"), None),
                collector_pauses(server) if server.metrics_port else None,
            )
        except RuntimeError as error:
            print(" failed")
            self.skip(scenario.key, name, transport, str(error))
            return
        finally:
            server.stop()
        where = dict(scenario=scenario.key, server=name, transport=self.label(transport))
        previous = None
        for line in lines:
            reading = line.pop("gc", None)
            if line["phase"] == "step" and reading is not None:
                full, longest = pauses_between(previous, reading)
                line.update(gc_full_collections=full, gc_longest_pause_ms_at_most=longest)
            previous = reading or previous
            if line["phase"] in (
                "step",
                "handshake",
                "warm",
                "idle",
                "window",
                "connect",
                "armed",
                "storm",
                "fanout",
            ):
                self.record(kind=line["phase"], **where, **line)
        summary = summarize(scenario, lines) | pauses
        if ping is not None:
            summary["ping_interval_s"] = ping
        if scenario.up_to_limit:
            summary["fd_limit"] = self.fd_limit
            summary["clients_wanted"] = (scenario.quick if self.quick else scenario.full)["clients"]
        summary["loadavg_1m_at_start"] = loadavg
        if redis_nodes(name):
            summary.update(
                chatd_processes=redis_nodes(name),
                pinning=pinning.describe(),
                core_bound=pinning.measured is None,
            )
        self.summaries[scenario.key, name, transport] = summary
        self.record(kind="summary", **where, **summary)
        print(f" {time.monotonic() - started:.0f}s")

    def skip(self, scenario: str, server: str, transport: str, reason: str) -> None:
        self.skipped.append((scenario, server, self.label(transport), reason))
        self.record(
            kind="skipped",
            scenario=scenario,
            server=server,
            transport=self.label(transport),
            reason=reason,
        )

    def label(self, transport: str) -> str:
        """The transport as records and tables name it: `ws+deflate` under --compression."""
        return f"{transport}+deflate" if self.compression and transport != "*" else transport


# -- the table ------------------------------------------------------------------------------------


def fmt(value, digits: int = 0) -> str:
    """A number for the table; None and the loadgen's -1 (unknown) are shown as -."""
    return "-" if value is None or value < 0 else f"{value:,.{digits}f}"


def percent(part: int | None, whole: int) -> str:
    """`part` as a share of `whole` for the table; - when there is no part (not measured)."""
    return "-" if part is None or not whole else f"{100 * part / whole:.0f}%"


def best(v: dict) -> dict:
    return v.get("max") or {}


def first(v: dict) -> dict:
    return v.get("first") or {}


def pauses_in_steps(v: dict) -> str:
    """chatd's full collections after the clients connected, and its longest pause then."""
    if "gc_full_collections_after_connect" not in v:
        return "-"
    bound = v["gc_longest_pause_after_connect_ms_at_most"]
    return f"{v['gc_full_collections_after_connect']}/" + (f"≤{bound:g}" if bound else "-")


# Each table: its columns (header, width, cell), and the figure chatd is compared on.
CHAT_TABLE = (
    [
        ("deliveries/s", 14, lambda v: fmt(best(v).get("delivered_dps"))),
        ("msgs/s", 9, lambda v: fmt(best(v).get("rate"))),
        ("p50 ms", 8, lambda v: fmt(best(v).get("p50_ms"), 1)),
        ("p99 ms", 8, lambda v: fmt(best(v).get("p99_ms"), 1)),
        ("µs/deliv", 10, lambda v: fmt(best(v).get("server_cpu_us_per_delivery"), 2)),
        ("sys µs", 8, lambda v: fmt(best(v).get("server_sys_us_per_delivery"), 2)),
        ("loadgen", 9, lambda v: fmt(best(v).get("loadgen_cpu_pct")) + "%"),
        ("others", 8, lambda v: fmt(best(v).get("core_others_pct")) + "%"),
        ("lost/dup/drop", 15, lambda v: f"{v['lost']}/{v['dups'] + v['gaps']}/{v['dropped']}"),
        ("1st p50", 9, lambda v: fmt(first(v).get("p50_ms"), 1)),
        ("1st p99", 9, lambda v: fmt(first(v).get("p99_ms"), 1)),
        ("gc max ms", 11, lambda v: fmt(v.get("gc_longest_pause_ms"), 1)),
        ("in steps", 10, pauses_in_steps),
    ],
    lambda v: best(v).get("delivered_dps"),
    "",
)
CPU_TABLE = (
    [
        ("deliveries/s", 14, lambda v: fmt(first(v).get("delivered_dps"))),
        ("µs/deliv", 10, lambda v: fmt(first(v).get("server_cpu_us_per_delivery"), 2)),
        ("sys µs", 8, lambda v: fmt(first(v).get("server_sys_us_per_delivery"), 2)),
        ("p50 ms", 8, lambda v: fmt(first(v).get("p50_ms"), 1)),
        ("p99 ms", 8, lambda v: fmt(first(v).get("p99_ms"), 1)),
        ("loadgen", 9, lambda v: fmt(first(v).get("loadgen_cpu_pct")) + "%"),
        ("others", 8, lambda v: fmt(first(v).get("core_others_pct")) + "%"),
        ("lost/dup/drop", 15, lambda v: f"{v['lost']}/{v['dups'] + v['gaps']}/{v['dropped']}"),
    ],
    lambda v: first(v).get("server_cpu_us_per_delivery"),
    " (lower is better)",
)
IDLE_TABLE = (
    [
        ("connections", 13, lambda v: fmt(v["connections"])),
        ("RSS before", 14, lambda v: fmt(v["rss_before_kib"]) + " KiB"),
        ("RSS after", 14, lambda v: fmt(v["rss_after_kib"]) + " KiB"),
        ("KiB/conn", 10, lambda v: fmt(v["kib_per_connection"], 2)),
    ],
    lambda v: v["kib_per_connection"],
    " (lower is better)",
)
KEEPALIVE_TABLE = (
    [
        ("connections", 13, lambda v: fmt(v["connections"])),
        ("window s", 10, lambda v: fmt(v["window_s"], 1)),
        ("pings", 9, lambda v: fmt(v["pings"])),
        ("pings/conn", 12, lambda v: fmt(v["pings_per_connection"], 2)),
        ("srv CPU", 9, lambda v: fmt(v["server_cpu_pct"], 1) + "%"),
        ("µs/ping", 9, lambda v: fmt(v["server_cpu_us_per_ping"], 1)),
        ("loadgen", 9, lambda v: fmt(v["loadgen_cpu_pct"], 1) + "%"),
        ("others", 8, lambda v: fmt(v["core_others_pct"]) + "%"),
        ("dropped", 9, lambda v: fmt(v["window_dropped"])),
    ],
    lambda v: v["server_cpu_us_per_ping"],
    " (µs/ping, lower is better)",
)
HANDSHAKE_TABLE = (
    [
        ("handshakes/s", 14, lambda v: fmt(v["per_s"])),
        ("p50 ms", 8, lambda v: fmt(v["p50_ms"], 1)),
        ("p99 ms", 8, lambda v: fmt(v["p99_ms"], 1)),
        ("srv ms/hs", 11, lambda v: fmt(v["server_cpu_ms_per_handshake"], 3)),
        ("sys ms/hs", 11, lambda v: fmt(v["server_sys_ms_per_handshake"], 3)),
        ("loadgen", 9, lambda v: fmt(v["loadgen_cpu_pct"]) + "%"),
        ("failed", 8, lambda v: fmt(v["failed"])),
        ("resumed", 9, lambda v: percent(v.get("resumed"), v["handshakes"])),
    ],
    lambda v: v["per_s"],
    "",
)


STORM_TABLE = (
    [
        ("clients", 9, lambda v: fmt(v["clients"])),
        ("back", 8, lambda v: fmt(v["back"])),
        ("stop s", 8, lambda v: fmt(v["stop_s"], 2)),
        ("start s", 9, lambda v: fmt(v["start_s"], 2)),
        ("back in s", 11, lambda v: fmt(v["back_s"], 2)),
        ("p50 ms", 9, lambda v: fmt(v["p50_ms"], 0)),
        ("p99 ms", 9, lambda v: fmt(v["p99_ms"], 0)),
        ("recovered", 11, lambda v: "no resume" if v["no_resume"] else fmt(v["recovered"])),
        ("hist≠", 7, lambda v: fmt(v["history_mismatch"])),
        ("refused/failed", 16, lambda v: f"{v['refused']}/{v['failed_attempts']}"),
        ("srv CPU", 9, lambda v: fmt(v["server_cpu_pct"]) + "%"),
        ("loadgen", 9, lambda v: fmt(v["loadgen_cpu_pct"]) + "%"),
        ("down s", 8, lambda v: fmt(v["down_s"], 2)),
    ],
    lambda v: v["back_s"] if v["all_back"] else None,
    " (back in s, lower is better)",
)
HOLD_TABLE = (
    [
        ("connections", 13, lambda v: fmt(v["connections"])),
        ("KiB/conn", 10, lambda v: fmt(v["kib_per_connection"], 2)),
        ("RSS after", 14, lambda v: fmt(v["rss_after_kib"]) + " KiB"),
        ("srv CPU", 9, lambda v: fmt(v["server_cpu_pct"], 1) + "%"),
        ("µs/ping", 9, lambda v: fmt(v["server_cpu_us_per_ping"], 1)),
        ("dropped", 9, lambda v: fmt(v["dropped"])),
        ("members", 9, lambda v: fmt(v["room_members"])),
        ("fan p50", 9, lambda v: fmt(v["fanout"]["p50_ms"], 1)),
        ("fan p99", 9, lambda v: fmt(v["fanout"]["p99_ms"], 1)),
        ("µs/deliv", 10, lambda v: fmt(v["fanout"]["server_cpu_us_per_delivery"], 2)),
        ("lost", 6, lambda v: fmt(v["fanout"]["lost"])),
    ],
    lambda v: v["kib_per_connection"],
    " (KiB/conn, lower is better)",
)


def text_per_wire(v: dict) -> str:
    """What the messages' text came to per byte on the wire, or why there is no figure."""
    if not v.get("deflate_accepted"):
        return "declined"
    return fmt(v["text_per_wire_byte"], 2) + "x"


DEFLATE_COLUMN = ("text÷wire", 11, text_per_wire)


def redis_columns(step) -> list:
    """What a message costs the servers (all of a Redis-mode server's nodes) and redis-server,
    at the step the table shows (`step`: best or first)."""
    return [
        ("µs/msg", 10, lambda v: fmt(step(v).get("server_cpu_us_per_message"), 1)),
        ("redis µs/msg", 14, lambda v: fmt(step(v).get("redis_cpu_us_per_message"), 1)),
    ]


def table_of(scenario: Scenario, compression: bool):
    if scenario.key == "cpu":
        table = CPU_TABLE
    elif scenario.mode == "storm":
        table = STORM_TABLE
    elif scenario.mode == "hold":
        table = HOLD_TABLE
    elif "window_seconds" in scenario.full:
        table = KEEPALIVE_TABLE
    else:
        by_mode = {"chat": CHAT_TABLE, "idle": IDLE_TABLE, "handshake": HANDSHAKE_TABLE}
        table = by_mode[scenario.mode]
    if compression and scenario.mode == "chat":  # the messages: how well they compressed
        columns, figure, note = table
        return [*columns, DEFLATE_COLUMN], figure, note
    return table


def print_rows(table, rows: list[tuple[str, dict]]) -> None:
    columns, figure, note = table
    print(
        f"  {'server':<22}" + "".join(f"{h:>{w}}" for h, w, _ in columns) + f"  chatd ÷ this{note}"
    )
    chatd = next((figure(v) for name, v in rows if name == "chatd"), None)
    for name, v in rows:
        this = figure(v)
        ratio = f"{chatd / this:.2f}x" if chatd and this and name != "chatd" else ""
        print(f"  {name:<22}" + "".join(f"{cell(v):>{w}}" for _, w, cell in columns) + f"  {ratio}")


def print_table(run: Run, order: list[str], servers: list[str]) -> None:
    print()
    for key in order:
        scenario = SCENARIOS[key]
        if key == "k0" and "k" in order:
            continue  # in (k)'s table
        for transport in scenario.transports:
            rows = [(name, run.summaries.get((key, name, transport))) for name in servers]
            if key == "f":  # chatd with fsync = batch against everyone's (a)
                rows += [(f"{name} (a)", run.summaries.get(("a", name, "ws"))) for name in servers]
            if key == "k":  # with keepalive off, if (k0) ran too
                off = [(f"{name} (off)", run.summaries.get(("k0", name, "ws"))) for name in servers]
                rows += off
            rows = [(name, v) for name, v in rows if v is not None]
            if rows:
                print(f"({key}) {scenario.title} [{run.label(transport)}]")
                if scenario.mode == "storm" and any(name != "chatd" for name, _ in rows):
                    print("  (the baselines have no resume: their rows are reconnect + join only)")
                table = table_of(scenario, run.compression)
                if scenario.mode == "chat" and any(redis_nodes(name) for name, _ in rows):
                    columns, figure, note = table
                    step = first if key == "cpu" else best
                    table = [*columns, *redis_columns(step)], figure, note
                print_rows(table, rows)
                print()
    for scenario, server, transport, reason in run.skipped:
        last = reason.strip().splitlines()[-1] if reason.strip() else "?"
        print(f"skipped ({scenario}) {server} {transport}: {last}")


def redis_cost(plain: dict, one: dict) -> dict | None:
    """chatd-redis's CPU per message against chatd's at the rates both were sent (a step's cost
    per message falls as the rate grows and more events share a write or a Redis batch); the
    headline is the highest rate at which both steps passed, else the lowest they share."""
    rates = {
        step["rate"]: step
        for step in plain.get("by_rate", [])
        if step["server_cpu_us_per_message"] is not None
    }
    pairs = [
        (rates[step["rate"]], step)
        for step in one.get("by_rate", [])
        if step["rate"] in rates and step["server_cpu_us_per_message"] is not None
    ]
    if not pairs:
        return None
    pairs.sort(key=lambda pair: pair[0]["rate"])
    passed = [pair for pair in pairs if pair[0]["ok"] and pair[1]["ok"]]
    a, b = (passed or pairs[:1])[-1]
    return {
        "at_rate": a["rate"],
        "chatd_us_per_message": a["server_cpu_us_per_message"],
        "redis_mode_us_per_message": b["server_cpu_us_per_message"],
        "added_us_per_message": round(
            b["server_cpu_us_per_message"] - a["server_cpu_us_per_message"], 1
        ),
        "redis_us_per_message": b.get("redis_cpu_us_per_message"),
        "by_rate": [
            {
                "rate": a["rate"],
                "chatd": a["server_cpu_us_per_message"],
                "redis_mode": b["server_cpu_us_per_message"],
                "redis_server": b.get("redis_cpu_us_per_message"),
            }
            for a, b in pairs
        ],
    }


def compare_redis(run: Run, order: list[str], servers: list[str]) -> None:
    """What Redis mode costs per message (chatd-redis against chatd, `redis_cost`) and how it
    scales (chatd-redis-xN against chatd-redis: the sweep's best passing throughput, and its
    highest delivered at any step; the cpu scenario's rate is fixed, so there the CPU per
    message summed over the nodes); printed and recorded (`kind` "redis")."""
    many = [name for name in servers if (redis_nodes(name) or 0) > 1]
    for key in order:
        if SCENARIOS[key].mode != "chat":
            continue
        for transport in SCENARIOS[key].transports:
            got = {name: run.summaries.get((key, name, transport)) for name in servers}
            plain, one = got.get("chatd"), got.get("chatd-redis")
            where = f"({key}) {run.label(transport)}"
            record = dict(scenario=key, transport=run.label(transport))
            cost = redis_cost(plain, one) if plain and one else None
            if cost:
                steps = "; ".join(
                    f"{r['rate']:g} msg/s: {r['chatd']:,.1f} → {r['redis_mode']:,.1f}"
                    f" ({r['redis_mode'] - r['chatd']:+,.1f}),"
                    f" redis-server {fmt(r['redis_server'], 1)}"
                    for r in cost["by_rate"]
                )
                print(f"Redis's cost {where}, µs of CPU per message, chatd → chatd-redis: {steps}")
                record.update(cost)
            for name in many:
                v = got.get(name)
                if not (one and v and first(one) and first(v)):
                    continue
                n = redis_nodes(name)
                bound = f" [{v['pinning']}]" if v.get("core_bound") else ""
                if key == "cpu":  # a fixed rate: nothing to scale but the CPU it takes
                    x1, xn = first(one), first(v)
                    print(
                        f"{name} {where}, fixed rate: {fmt(xn['server_cpu_us_per_message'], 1)}"
                        f" µs of chatd CPU per message over {n} processes, against"
                        f" {fmt(x1['server_cpu_us_per_message'], 1)} in one{bound}"
                    )
                    record[f"x{n}_us_per_message"] = xn["server_cpu_us_per_message"]
                    continue
                x1, xn = best(one).get("delivered_dps"), best(v).get("delivered_dps")
                peak1, peakn = one["peak_delivered_dps"], v["peak_delivered_dps"]
                scaling = round(xn / x1, 3) if x1 and xn else None
                print(
                    f"Scaling {where}: {name} {fmt(xn)} deliveries/s at its best passing step,"
                    f" chatd-redis {fmt(x1)}: {fmt(scaling, 2)}x with {n} processes; highest"
                    f" delivered at any step {fmt(peakn)} and {fmt(peak1)}:"
                    f" {fmt(peakn / peak1 if peak1 else None, 2)}x{bound}"
                )
                record[f"x{n}_scaling"] = scaling
                record[f"x{n}_peak_scaling"] = round(peakn / peak1, 3) if peak1 else None
                record[f"x{n}_core_bound"] = v.get("core_bound")
            if len(record) > 2:
                run.record(kind="redis", **record)


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark chatd against baseline servers.")
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help="comma-separated, from: " + ",".join(SCENARIOS) + " (default: %(default)s)",
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated, from: " + ",".join(SERVERS) + ", and, only when named, chatd in"
        " Redis mode with a redis-server of its own: chatd-redis (one process) and chatd-redis-xN"
        " (N processes, the clients of each room spread over them), e.g. chatd-redis-x2",
    )
    parser.add_argument(
        "--cores",
        type=int,
        default=os.cpu_count() or 1,
        help="pin onto cores 0..N-1 (default: all, %(default)s): chatd-redis-xN gets a core per"
        " process when N+1 cores leave the loadgen one, else they all share (core-bound)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny scales (the smoke test)")
    parser.add_argument(
        "--compression",
        action="store_true",
        help="permessage-deflate: chatd with [limits] compression = yes, node and websockets"
        " with theirs, the loadgen offering it and inflating (autobahn and c are skipped)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=BENCH / "results" / "runs.jsonl",
        help="append JSON lines here (default: %(default)s)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=540,
        help="start no further server after this many seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--chatd",
        type=Path,
        default=ROOT,
        metavar="DIR",
        help="run chatd from this checkout (default: this one), e.g. an older commit in a"
        " `git worktree`, to compare with the same harness and venv",
    )
    parser.add_argument(
        "--chatd-set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="set a chatd configuration key on top of the bench's (repeatable), e.g."
        " limits.listen_backlog=4096",
    )
    args = parser.parse_args(argv)
    for setting in args.chatd_set:
        name, equals, value = setting.partition("=")
        section, dot, key = name.partition(".")
        if not (equals and dot and section and key):
            parser.error(f"--chatd-set wants SECTION.KEY=VALUE, got {setting!r}")
        CHATD_SETTINGS.setdefault(section, {})[key] = value
    args.scenarios = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    args.servers = [k.strip() for k in args.servers.split(",") if k.strip()]
    for key in args.scenarios:
        if key not in SCENARIOS:
            parser.error(f"unknown scenario {key!r}")
    for name in args.servers:
        if name not in SERVERS and not redis_nodes(name):
            parser.error(f"unknown server {name!r}")
    if not 1 <= args.cores <= (os.cpu_count() or 1):
        parser.error(f"--cores: this machine has {os.cpu_count()} cores, not {args.cores}")
    return args


def main(argv: list[str]) -> int:
    global CHATD_ROOT, CORES
    args = parse_args(argv)
    CHATD_ROOT = args.chatd.resolve()
    CORES = args.cores
    started = time.monotonic()
    fd_limit = raise_fd_limit()
    facts = machine_facts()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    loadgen, tls, how = build_loadgen(BENCH / "build")
    servers = list(args.servers)
    notes = []
    if "node" in servers and (why := node_ready()):
        servers.remove("node")
        notes.append(("*", "node", "*", why))
    c_baseline = None
    if "c" in servers:
        binary, c_baseline = build_c_baseline(C_BASELINE_BINARY)
        if binary is None:
            servers.remove("c")
            notes.append(("*", "c", "*", c_baseline))
    pinning = "taskset -c 0 (server), -c 1 (loadgen)" if can_pin() else "none"
    print(
        f"chatd bench {'(quick) ' if args.quick else ''}"
        f"{'with permessage-deflate ' if args.compression else ''}on {facts['nproc']} x "
        f"{facts['model_name']}, load average {facts['loadavg'][0]:.2f}; pinning: {pinning}; "
        f"open files: {fd_limit}"
    )
    print(f"chatd: {CHATD_ROOT} at {chatd_revision(CHATD_ROOT)}")
    if CHATD_SETTINGS:
        print(f"chatd settings on top of the bench's: {CHATD_SETTINGS}")
    print(f"loadgen: {how}")
    if "c" in servers:
        print(f"C baseline: {c_baseline}")
    layouts = {}
    for name in servers:
        if redis_nodes(name):
            layouts[name] = Pinning.of(redis_nodes(name), True).describe()
            print(f"{name}: {layouts[name]}")
    with tempfile.TemporaryDirectory(prefix="chatd-bench-") as tmp:
        work = Path(tmp)
        cert, key = make_certificate(work)
        deadline = started + args.budget
        run = Run(
            args.results,
            args.quick,
            loadgen,
            tls,
            cert,
            key,
            work,
            deadline,
            args.compression,
            fd_limit,
        )
        run.record(
            kind="run",
            quick=args.quick,
            compression=args.compression,
            scenarios=args.scenarios,
            servers=servers,
            machine=facts,
            versions=package_versions(),
            chatd_revision=chatd_revision(CHATD_ROOT),
            chatd_root=str(CHATD_ROOT),
            chatd_settings=CHATD_SETTINGS,
            loadgen=how,
            c_baseline=c_baseline,
            pinning=pinning,
            cores=CORES,
            redis_pinning=layouts,
            fd_limit=fd_limit,
        )
        for note in notes:
            run.skip(*note)
        if loadgen is None:
            for key in args.scenarios:
                run.skip(key, "*", "*", how)
        else:
            for key in args.scenarios:
                scenario = SCENARIOS[key]
                need = scenario.full.get("clients", 0) if not args.quick else 0
                if scenario.up_to_limit:  # it takes what the limit leaves
                    need = 0
                if need and fd_limit < need + 100:
                    run.skip(key, "*", "*", f"needs {need} open files, the limit is {fd_limit}")
                    continue
                print(f"({key}) {scenario.title}")
                run.scenario(scenario, servers)
        print_table(run, args.scenarios, servers)
        compare_redis(run, args.scenarios, servers)
    print(f"\n{time.monotonic() - started:.0f}s; results appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
