"""CPU per event of chatd's Redis client (chatd/redis/client.py) against a real redis-server.

    python bench/redis_client.py [--events 100000] [--batch 64] [--rooms 100] [--repeat 3]

Starts a `redis-server` in a temporary directory, configured as chatd requires (append-only
file fsynced on every write, no eviction), and sends it `--events` messages as chatd's
sequencer does: post.lua called by EVALSHA, `--batch` calls pipelined at a time (a reactor
turn's batch), each batch sent once the previous one is answered, the arguments built by
`RedisSequencer.call`. It reports this process's CPU time (user + system, reactor included)
per event, and redis-server's, best of `--repeat` runs. With redis-py installed (chatd does
not depend on it), it does the same through a redis-py pipeline for comparison; without it
that line says it is skipped. It measures and prints; it never asserts timings.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet import defer
from twisted.python.failure import Failure

from chatd.config import RedisConfig
from chatd.redis.client import RedisLink
from chatd.redis.keys import Keys
from chatd.redis.sequencer import POST, RedisSequencer
from chatd.rooms import message_draft

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_cpu(pid: int) -> float:
    """redis-server's user + system CPU seconds so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_redis(directory: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = directory / "redis.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\nappendonly yes\n"
        'appendfsync always\nmaxmemory-policy noeviction\nsave ""\n'
    )
    process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", str(config)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.05)


def calls(run: int, events: int, rooms: int) -> list[tuple[list, list]]:
    """post.lua's keys and arguments for `events` messages, as the sequencer builds them."""
    sequencer = RedisSequencer(None, Keys("bench"), "bench", None, 300.0, lambda: "e0", None)
    now = time.time()
    return [
        sequencer.call(
            f"room-{i % rooms}",
            message_draft(f"user{i % 1000}", "A Name", f"r{run}-{i}", "hello " * 8, now),
        )
        for i in range(events)
    ]


def chatd_client(port: int, runs: list[list], batch: int) -> list[float]:
    """CPU seconds of this process to pipeline each run's calls through chatd's client,
    `batch` at a time (all runs on one reactor: a reactor does not start twice)."""
    from twisted.internet import reactor

    spent = []

    async def main():
        link = RedisLink(reactor, RedisConfig(url=f"redis://127.0.0.1:{port}"), scripts=(POST,))
        ready = defer.Deferred()
        link.on_up.append(lambda _protocol: ready.called or ready.callback(None))
        link.start()
        await ready
        for work in runs:
            started = time.process_time()
            for start in range(0, len(work), batch):
                outcomes = await link.run_many(POST, work[start : start + batch])
                assert all(ok for ok, _reply in outcomes), outcomes
            spent.append(time.process_time() - started)
        await link.stop()

    outcome = []
    done = defer.ensureDeferred(main()).addBoth(outcome.append)
    done.addBoth(lambda _ignored: reactor.stop())
    reactor.run()
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return spent


def redis_py_client(redis, port: int, work: list, batch: int) -> float:
    client = redis.Redis(port=port)
    sha = client.script_load(POST.source)
    started = time.process_time()
    for start in range(0, len(work), batch):
        pipe = client.pipeline(transaction=False)
        for keys, args in work[start : start + batch]:
            pipe.evalsha(sha, len(keys), *keys, *args)
        pipe.execute()
    spent = time.process_time() - started
    client.close()
    return spent


def measure(client: str, args, port: int, pid: int) -> tuple[float, float]:
    """Best-of-`repeat` µs per event: (this process, redis-server)."""
    runs = [calls(run, args.events, args.rooms) for run in range(args.repeat)]
    before = server_cpu(pid)
    if client == "chatd":
        spent = chatd_client(port, runs, args.batch)
    else:
        import redis

        spent = [redis_py_client(redis, port, work, args.batch) for work in runs]
    server = (server_cpu(pid) - before) / args.repeat
    return min(spent) * 1e6 / args.events, server * 1e6 / args.events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chatd-bench-redis-") as directory:
        process, port = start_redis(Path(directory))
        try:
            version = subprocess.run(
                [process.args[0], "--version"], capture_output=True, text=True
            ).stdout.split()[2]
            print(
                f"redis-server {version.removeprefix('v=')}, appendfsync always;"
                f" {args.events} events, batches of {args.batch}, {args.rooms} rooms;"
                f" best of {args.repeat}; CPU µs per event (client process, redis-server)"
            )
            client, server = measure("chatd", args, port, process.pid)
            print(f"chatd client (hiredis + Twisted)  {client:6.2f}  {server:6.2f}")
            try:
                import redis
            except ImportError:
                print("redis-py                          skipped: not installed")
            else:
                client, server = measure("redis-py", args, port, process.pid)
                print(f"redis-py {redis.__version__:<25} {client:6.2f}  {server:6.2f}")
        finally:
            process.terminate()
            process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
