"""What a webhook endpoint keeps on disk: its cursor (how far each room was delivered) and a
small status file for `chatd webhooks status`, both in `[webhooks] state_directory`.

    NAME.cursor.json   {"rooms": {room: {"epoch": ..., "seq": ...}}}
    NAME.status.json   lag, last error, next retry, ... as of the daemon's last write

Both are replaced atomically (written aside, fsynced, renamed, the directory fsynced), so a
crash leaves the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


def cursor_path(directory: Path, endpoint: str) -> Path:
    return directory / f"{endpoint}.cursor.json"


def status_path(directory: Path, endpoint: str) -> Path:
    return directory / f"{endpoint}.status.json"


def write_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(aside, path)
    if durable:
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def load_cursors(path: Path) -> dict[str, tuple[str, int]] | None:
    """{room: (epoch, seq)}; None if the endpoint has no cursor file yet. Raises ValueError
    if the file is not one of ours."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    rooms = data.get("rooms") if isinstance(data, dict) else None
    if not isinstance(rooms, dict):
        raise ValueError(f"{path} is not a webhook cursor file")
    cursors = {}
    for room, at in rooms.items():
        with contextlib.suppress(KeyError, TypeError):
            if isinstance(at["epoch"], str) and isinstance(at["seq"], int):
                cursors[room] = (at["epoch"], at["seq"])
    return cursors


def save_cursors(path: Path, cursors: dict[str, tuple[str, int]]) -> None:
    rooms = {room: {"epoch": epoch, "seq": seq} for room, (epoch, seq) in sorted(cursors.items())}
    write_atomically(path, json.dumps({"rooms": rooms}, indent=0).encode())


def save_status(path: Path, status: dict) -> None:
    """Not fsynced: it is a report, rewritten often, and only read by people."""
    write_atomically(path, json.dumps(status, indent=2).encode() + b"\n", durable=False)


def load_status(path: Path) -> dict | None:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
