"""`make run-cluster`: a local Redis mode cluster for development (README, "Running several
processes (Redis)").

Starts a `redis-server` configured as chatd requires (append-only file fsynced on every write,
no eviction; its data under DIR/redis), then NODES chatd nodes, one after the other, each on
the embedded defaults but for `[redis] url`, its node name and its ports (node i listens on
ws PORT+i, wss WSS_PORT+i, metrics METRICS_PORT+i, i from 0). The nodes run in the current
directory, so they share one transcript directory (var/transcripts) and the development
certificate; their INI files are written to DIR. Ctrl-C (or SIGTERM) stops the nodes
(SIGTERM: they close their clients with 1001 and release their leases), then Redis; so does
any of the three exiting.

    python etc/run-cluster.py [--dir build/cluster] [--redis-port 0] [--ws-port 8080] ...
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0  # above [server] shutdown_timeout (10 s)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_conf(directory: Path, port: int) -> str:
    return (
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {directory.resolve()}\n"
        "daemonize no\n"
        "appendonly yes\n"
        "appendfsync always\n"
        "maxmemory-policy noeviction\n"
        'save ""\n'
    )


def node_ini(url: str, node: str, ws: int, wss: int, metrics: int) -> str:
    return (
        "; Written by etc/run-cluster.py: the embedded defaults but for these.\n"
        f"[ws]\nport = {ws}\n\n"
        f"[wss]\nport = {wss}\n\n"
        f"[metrics]\nport = {metrics}\n\n"
        f"[redis]\nurl = {url}\nnode = {node}\n"
    )


def wait_until(ready, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise SystemExit(f"run-cluster: {what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"run-cluster: {what} did not start within {START_TIMEOUT:.0f}s")
        time.sleep(0.1)


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("build/cluster"))
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--redis-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--ws-port", type=int, default=8080)
    parser.add_argument("--wss-port", type=int, default=8443)
    parser.add_argument("--metrics-port", type=int, default=9101)
    parser.add_argument("--twistd", default=str(Path(sys.executable).parent / "twistd"))
    args = parser.parse_args(argv)
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("run-cluster: no redis-server on PATH (Debian: apt-get install redis-server)")
        return 1
    data = args.dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    redis_port = args.redis_port or free_port()
    (args.dir / "redis.conf").write_text(redis_conf(data, redis_port))
    url = f"redis://127.0.0.1:{redis_port}"

    # The children have sessions of their own: Ctrl-C reaches this script only, which stops
    # the nodes before Redis (so that they can release their leases).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    processes: list[subprocess.Popen] = []
    stopped = False
    try:
        with (args.dir / "redis.log").open("ab") as redis_log:
            redis = subprocess.Popen(
                [redis_server, str(args.dir / "redis.conf")],
                stdout=redis_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.append(redis)
        wait_until(lambda: redis_answers(redis_port), redis, "redis-server")
        print(f"run-cluster: redis-server at {url}, data in {data}", flush=True)
        for i in range(args.nodes):
            name = f"node{i + 1}"
            ws = args.ws_port + i
            ini = args.dir / f"{name}.ini"
            ini.write_text(node_ini(url, name, ws, args.wss_port + i, args.metrics_port + i))
            node = subprocess.Popen(
                [args.twistd, "--nodaemon", "--pidfile=", "chatd", "--config", str(ini)],
                start_new_session=True,
            )
            processes.append(node)
            wait_until(lambda port=ws: healthy(port), node, f"chatd {name}")
            print(
                f"run-cluster: {name} ({ini}) on ws://127.0.0.1:{ws}/ws and"
                f" wss://127.0.0.1:{args.wss_port + i}/ws",
                flush=True,
            )
        print("run-cluster: ready; Ctrl-C stops the nodes, then Redis", flush=True)
        while all(process.poll() is None for process in processes):
            time.sleep(0.2)
    except KeyboardInterrupt:
        stopped = True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for process in [*processes[1:], *processes[:1]]:  # the nodes first, Redis last
            stop(process)
    return 0 if stopped and all(process.returncode == 0 for process in processes) else 1


if __name__ == "__main__":
    sys.exit(main())
