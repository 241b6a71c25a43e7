"""chatd's start-up with many transcripts: time and memory as the transcript directory grows.

    python bench/startup.py [--counts 0,1000,10000,100000] [--chatd LABEL=DIR ...] [--quick]

For each count N it writes N small transcripts (chatd's line format: public rooms with a few
messages and presence lines, and support conversations, some resolved with a `status` event)
into a temporary directory, then starts the real `twistd -n chatd` on them (ws on a free port,
the support desk on) once per checkout given with `--chatd` (default: this one), and measures:

- `listen_s`: process start -> the `listener ready` log line. twistd binds the listeners in
  privilegedStartService, *before* startService recovers anything, so this line says little;
- `serving_s`: process start -> a `welcome` to a WebSocket `hello` sent as soon as the port is
  known: the kernel queues the connection, the reactor answers it once start-up is over. This
  is the start-up time;
- `cpu_s`: the daemon's CPU time (user + system) at that point, less noisy than wall time on a
  shared machine;
- `rss_kib`, `hwm_kib`: VmRSS and VmHWM (the peak) from /proc/PID/status just after the welcome;
- `join_ms`, `join2_ms`: the first join of an existing public room after start (a room the new
  code loads from its transcript on demand), then of a second one; `support_join_ms`: an
  agent's first join of an existing support conversation.

Per-file costs are (figure at N - figure at 0) / N. A start that is not serving within
`--timeout` seconds is stopped and reported with how far it got (`recovered room` log lines for
code that loads every room at start). Records are appended to the results file with
`kind = "startup"`. It measures and prints; it never asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import (  # noqa: E402 (bench/ is not a package)
    PYTHON,
    READY_LINE,
    ROOT,
    SERVER_CPU,
    chatd_revision,
    machine_facts,
    pinned,
    raise_fd_limit,
)

COUNTS = (0, 1_000, 10_000, 100_000)
SUPPORT_EVERY = 3  # one file in three is a support conversation
AGENT = "agent1"  # [support] trial_agents: the agent role by name (open mode)
SPREAD = 30 * 86400.0  # transcripts start within the 30 days before they are written
WORDS = ("hello", "thanks", "order", "delivery", "refund", "account", "invoice", "please", "when")


# -- transcripts ----------------------------------------------------------------------------------


def _ts(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def room_of(index: int) -> str:
    """The file's room: every SUPPORT_EVERY-th a support conversation, the others public."""
    return f"support-cust{index}" if index % SUPPORT_EVERY == 0 else f"room-{index}"


def transcript(index: int, rng: random.Random, now: float) -> list[str]:
    """One room's lines as chatd writes them: presence, messages and (support) status events.

    Support conversations take turns: resolved (a `status` event after the exchange), open and
    answered, open and waiting (the customer wrote last); public rooms hold 2-3 members saying
    a few things. Customer ids are plain ([a-z0-9-]), so both the old and the new naming of
    support rooms give `support-cust<N>`.
    """
    room = room_of(index)
    epoch = f"{rng.getrandbits(64):016x}"
    ts = now - SPREAD + rng.random() * (SPREAD - 7200)  # events add at most 15 min
    lines: list[str] = []

    def event(kind: str, **fields) -> None:
        nonlocal ts
        ts += rng.uniform(1, 90)
        head = {"type": kind, "room": room, "epoch": epoch, "seq": len(lines) + 1, "ts": _ts(ts)}
        lines.append(_line({**head, **fields}))

    def presence(user: str, change: str) -> None:
        event("presence", user=user, name=user.capitalize(), event=change)

    def say(user: str) -> None:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        cid = f"c{rng.getrandbits(32):08x}"
        event("message", **{"from": user, "name": user.capitalize(), "id": cid, "text": text})

    if room.startswith("support-"):
        customer = f"cust{index}"
        presence(customer, "join")
        say(customer)
        flavour = (index // SUPPORT_EVERY) % 3
        if flavour in (0, 1):  # an agent answered
            presence(AGENT, "join")
            say(AGENT)
            say(customer)
            say(AGENT)
            if flavour == 0:
                event("status", **{"from": AGENT, "name": "Agent1", "status": "resolved"})
            presence(AGENT, "leave")
        presence(customer, "leave")
    else:
        users = [f"user{rng.randrange(100_000)}" for _ in range(rng.randint(2, 3))]
        for user in users:
            presence(user, "join")
        for _ in range(rng.randint(2, 6)):
            say(rng.choice(users))
        for user in users:
            presence(user, "leave")
    return lines


def write_transcripts(directory: Path, count: int, seed: int = 10) -> dict:
    """Write `count` transcripts into `directory`; returns what was written.

    Their times end at least an hour before now, so every resolved conversation is past the
    default `[support] resolved_ttl` and the queue holds exactly the open ones."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    now = time.time()
    size = lines = support = resolved = 0
    for index in range(count):
        body = transcript(index, rng, now)
        data = ("\n".join(body) + "\n").encode()
        (directory / f"{room_of(index)}.jsonl").write_bytes(data)
        size += len(data)
        lines += len(body)
        if index % SUPPORT_EVERY == 0:
            support += 1
            resolved += (index // SUPPORT_EVERY) % 3 == 0
    return dict(files=count, bytes=size, lines=lines, support=support, resolved=resolved)


def existing_rooms(count: int) -> tuple[str | None, str | None, str | None]:
    """Two public rooms and one support conversation near the end of the directory."""
    public = [room_of(i) for i in range(count - 1, -1, -1) if i % SUPPORT_EVERY][:2]
    support = next((room_of(i) for i in range(count - 1, -1, -1) if i % SUPPORT_EVERY == 0), None)
    public += [None] * (2 - len(public))
    return public[0], public[1], support


# -- the daemon -----------------------------------------------------------------------------------


def write_config(work: Path, transcripts: Path) -> Path:
    """ws only on a free port, the support desk on (AGENT by name), metrics off. Only keys that
    the old code reads too, so one configuration serves both."""
    path = work / "chatd.ini"
    path.write_text(
        "[ws]\nport = 0\n\n[wss]\nenabled = no\n\n"
        f"[transcripts]\ndirectory = {transcripts}\nfsync = no\n\n"
        "[metrics]\nenabled = no\n\n"
        f"[support]\nenabled = yes\ntrial_agents = {AGENT}\n",
        encoding="utf-8",
    )
    return path


def proc_status(pid: int) -> dict[str, int]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request(ws, frame: dict, want: str, timeout: float) -> tuple[float, dict]:
    """Send `frame`; (ms until a frame of type `want` or `error` came, that frame)."""
    started = time.monotonic()
    ws.send(json.dumps(frame))
    while True:
        reply = json.loads(ws.recv(timeout=timeout))
        if reply.get("type") in (want, "error"):
            return (time.monotonic() - started) * 1000, reply


def measure(chatd_root: Path, transcripts: Path, work: Path, count: int, timeout: float) -> dict:
    """Start chatd from `chatd_root` on `transcripts`; the start-up figures (see the top)."""
    from websockets.sync.client import connect

    work.mkdir(parents=True, exist_ok=True)
    config = write_config(work, transcripts)
    command = [str(PYTHON.parent / "twistd"), "--nodaemon", "--pidfile=", "chatd"]
    command += ["--config", str(config)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(chatd_root), env.get("PYTHONPATH")]))
    log = work / "chatd.log"
    result: dict = dict(files=count)
    with open(log, "wb") as output:
        started = time.monotonic()
        process = subprocess.Popen(
            pinned(SERVER_CPU, command),
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = started + timeout
    try:
        port = None
        while port is None and time.monotonic() < deadline and process.poll() is None:
            match = READY_LINE.search(log.read_text(errors="replace"))
            if match:
                port = int(match[2])
                result["listen_s"] = round(time.monotonic() - started, 3)
            else:
                time.sleep(0.01)
        if port is None:
            raise RuntimeError("no listener ready line")
        remaining = max(deadline - time.monotonic(), 1.0)
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=remaining, max_size=None) as ws:
            ws.send(json.dumps({"type": "hello", "name": AGENT}))
            welcome = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 1.0)))
            result["serving_s"] = round(time.monotonic() - started, 3)
            result["cpu_s"] = round(proc_cpu_s(process.pid), 2)
            status = proc_status(process.pid)
            result["rss_kib"], result["hwm_kib"] = status["VmRSS"], status["VmHWM"]
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"no welcome: {welcome}")
            keys = ("join_ms", "join2_ms", "support_join_ms")
            for key, room in zip(keys, existing_rooms(count), strict=True):
                if room is None:
                    continue
                ms, reply = request(ws, {"type": "join", "room": room}, "joined", 30)
                if reply["type"] != "joined":
                    raise RuntimeError(f"join {room}: {reply}")
                result[key] = round(ms, 2)
                result[key.replace("_ms", "_seq")] = reply.get("seq")
    except (RuntimeError, OSError, TimeoutError) as error:
        result["failed"] = f"{type(error).__name__}: {error}"[:300]
        result["waited_s"] = round(time.monotonic() - started, 1)
        if process.poll() is None:
            result["cpu_s"] = round(proc_cpu_s(process.pid), 2)
            status = proc_status(process.pid)
            result["rss_kib"], result["hwm_kib"] = status["VmRSS"], status["VmHWM"]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
    text = log.read_text(errors="replace")
    # How far the old code's load-everything start got (it logs each room it recovers).
    result["recovered_rooms_logged"] = text.count("recovered room ")
    desk = re.search(r"support desk: (\d+) conversations in the queue, from (\d+)", text)
    if desk:
        result["queue"], result["support_rooms"] = int(desk[1]), int(desk[2])
    if "failed" in result:
        result["log_tail"] = text[-600:]
    return result


MEDIAN_KEYS = (
    "listen_s",
    "serving_s",
    "cpu_s",
    "rss_kib",
    "hwm_kib",
    "join_ms",
    "join2_ms",
    "support_join_ms",
)


def median_of(tries: list[dict]) -> dict:
    """The last try, with the median of each figure over the tries (all of them if one failed:
    then the failure is the result)."""
    result = dict(tries[-1])
    if "failed" in result:
        return result
    for key in MEDIAN_KEYS:
        values = sorted(t[key] for t in tries if t.get(key) is not None)
        if values:
            result[key] = values[len(values) // 2]
    return result


# -- the table ------------------------------------------------------------------------------------


def per_file(rows: list[dict]) -> None:
    """Add the increments over the N = 0 row of the same code to each row."""
    base = next((r for r in rows if r["files"] == 0 and "serving_s" in r), None)
    if base is None:
        return
    for row in rows:
        if row["files"] and "serving_s" in row:
            n = row["files"]
            row["us_per_file"] = round((row["serving_s"] - base["serving_s"]) * 1e6 / n, 1)
            row["cpu_us_per_file"] = round((row["cpu_s"] - base["cpu_s"]) * 1e6 / n, 1)
            row["bytes_per_file"] = round((row["rss_kib"] - base["rss_kib"]) * 1024 / n)
            row["peak_bytes_per_file"] = round((row["hwm_kib"] - base["hwm_kib"]) * 1024 / n)


def fmt(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


COLUMNS = [
    ("files", 9, lambda r: fmt(r["files"])),
    ("listen s", 10, lambda r: fmt(r.get("listen_s"), 2)),
    ("serving s", 11, lambda r: fmt(r.get("serving_s"), 2)),
    ("cpu s", 8, lambda r: fmt(r.get("cpu_s"), 2)),
    ("RSS KiB", 11, lambda r: fmt(r.get("rss_kib"))),
    ("peak KiB", 11, lambda r: fmt(r.get("hwm_kib"))),
    ("µs/file", 9, lambda r: fmt(r.get("us_per_file"), 1)),
    ("cpu µs/file", 13, lambda r: fmt(r.get("cpu_us_per_file"), 1)),
    ("B/file", 8, lambda r: fmt(r.get("bytes_per_file"))),
    ("peak B/file", 13, lambda r: fmt(r.get("peak_bytes_per_file"))),
    ("join ms", 9, lambda r: fmt(r.get("join_ms"), 1)),
    ("join2 ms", 10, lambda r: fmt(r.get("join2_ms"), 1)),
    ("support ms", 12, lambda r: fmt(r.get("support_join_ms"), 1)),
    ("queue", 8, lambda r: fmt(r.get("queue"))),
]


def print_table(label: str, rows: list[dict]) -> None:
    print(f"\n[{label}]")
    print("  " + "".join(f"{h:>{w}}" for h, w, _ in COLUMNS))
    for row in rows:
        line = "  " + "".join(f"{cell(row):>{w}}" for _, w, cell in COLUMNS)
        if "failed" in row:
            line += (
                f"  not serving after {row['waited_s']} s ({row['failed'][:80]});"
                f" {row['recovered_rooms_logged']:,} rooms recovered"
            )
        print(line)


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="chatd start-up time and memory vs transcripts.")
    parser.add_argument("--counts", default=",".join(map(str, COUNTS)), help="%(default)s")
    parser.add_argument(
        "--chatd",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="a checkout to run chatd from (repeatable; default: this one, as 'this')",
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="per start, seconds (default: %(default)s)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="starts per count up to 10,000 files, the median is reported (default: %(default)s;"
        " larger counts start once)",
    )
    parser.add_argument("--quick", action="store_true", help="counts 0,20: the smoke test")
    parser.add_argument(
        "--results", type=Path, default=BENCH / "results" / "runs.jsonl", help="%(default)s"
    )
    parser.add_argument("--keep", type=Path, help="write the transcripts here and keep them")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 1
    args.counts = [0, 20] if args.quick else [int(c) for c in args.counts.split(",") if c]
    checkouts = []
    for spec in args.chatd or [f"this={ROOT}"]:
        label, _, directory = spec.rpartition("=")
        checkouts.append((label or Path(directory).name, Path(directory).resolve()))
    args.chatd = checkouts
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    facts = machine_facts()
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    revisions = {label: chatd_revision(root) for label, root in args.chatd}
    print(
        f"chatd start-up bench on {facts['nproc']} x {facts['model_name']}, load average"
        f" {facts['loadavg'][0]:.2f}; " + ", ".join(f"{k} = {v}" for k, v in revisions.items())
    )
    rows: dict[str, list[dict]] = {label: [] for label, _ in args.chatd}
    with tempfile.TemporaryDirectory(prefix="chatd-startup-") as tmp:
        # One start per checkout first, not measured: it compiles the .pyc files and rebuilds
        # Twisted's plugin cache, which would otherwise land on whichever count comes first.
        empty = Path(tmp) / "warm-up"
        write_transcripts(empty, 0)
        for label, root in args.chatd if not args.quick else ():
            measure(root, empty, Path(tmp) / f"warm-up-{label}", 0, args.timeout)
        for count in args.counts:
            transcripts = (args.keep or Path(tmp)) / f"transcripts-{count}"
            if transcripts.exists():
                shutil.rmtree(transcripts)
            began = time.monotonic()
            written = write_transcripts(transcripts, count)
            print(
                f"  {count:,} transcripts: {written['bytes'] / 1e6:.1f} MB, {written['lines']:,}"
                f" lines, {written['support']:,} support ({written['resolved']:,} resolved),"
                f" written in {time.monotonic() - began:.1f} s"
            )
            for label, root in args.chatd:
                repeat = args.repeat if count <= 10_000 else 1
                print(f"    {label} ...", end="", flush=True)
                tries = []
                for attempt in range(repeat):
                    work = Path(tmp) / f"work-{label}-{count}-{attempt}"
                    tries.append(measure(root, transcripts, work, count, args.timeout))
                    print(
                        f" {tries[-1]['serving_s']} s"
                        if "failed" not in tries[-1]
                        else f" FAILED after {tries[-1]['waited_s']} s: {tries[-1]['failed']}",
                        end="",
                        flush=True,
                    )
                    if "failed" in tries[-1]:
                        break
                print()
                figures = median_of(tries)
                rows[label].append(figures)
                record = dict(
                    run=run_id,
                    time=datetime.now(UTC).isoformat(),
                    kind="startup",
                    chatd=label,
                    chatd_revision=revisions[label],
                    transcripts=written,
                    loadavg_1m=os.getloadavg()[0],
                    repeats=len(tries),
                    tries=[{k: t.get(k) for k in MEDIAN_KEYS} for t in tries],
                    **figures,
                )
                with open(args.results, "a", encoding="utf-8") as out:
                    out.write(json.dumps(record) + "\n")
            if args.keep is None:
                shutil.rmtree(transcripts)
    for label, _ in args.chatd:
        per_file(rows[label])
        print_table(label, rows[label])
    print(f"\nresults appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
