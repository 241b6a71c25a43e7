"""Atomic rewrites of transcript files: each line revised, kept or dropped, all at once.

What redaction, edits, retention and erasure have in common. A file is never changed in place:
the revised copy is written aside in the same directory (`.NAME.rewrite`), fsynced, renamed
over the original, and the directory is fsynced, so that a crash at any step leaves either the
old file or the new one, each whole and readable. A stale aside file from such a crash is
overwritten by the next rewrite, and removed at start (`remove_stale`).

The work is split in two so that the daemon can do the long part off its reactor thread:
`prepare` reads and revises every complete line and writes the aside file (in a thread);
`commit` (on the reactor thread, where the room's writer appends) revises the lines appended
since, renames, and says whether the file it prepared was still there: a file renamed by a
rotation in the meantime is left alone and the caller starts over. Whoever appends to the file
must reopen it after a commit (`TranscriptStore.reopen`): its old descriptor points at the
replaced file.

A `Revise` function gets each complete line and returns it unchanged (the same object), a new
line, or None to drop it. Lines it cannot read it must return unchanged.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Revise = Callable[[bytes], bytes | None]
ASIDE_SUFFIX = ".rewrite"


@dataclass
class Prepared:
    """A revised copy written aside, waiting for `commit`."""

    path: Path
    identity: tuple[int, int]  # (st_dev, st_ino) of the file that was read
    read_to: int  # bytes of it that were revised (up to its last newline)
    aside: Path
    changed: int
    dropped: int
    kept: int


def aside_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{ASIDE_SUFFIX}")


def revise_lines(
    lines: list[bytes], revise: Revise, stub: Callable[[bytes], bytes] | None = None
) -> tuple[list[bytes], int, int]:
    """(revised lines, how many changed, how many dropped). With `stub`, a file whose every
    line would be dropped keeps its last line, made a stub by `stub`."""
    out, changed, dropped = [], 0, 0
    for line in lines:
        new = revise(line)
        if new is None:
            dropped += 1
        else:
            changed += new is not line
            out.append(new)
    if stub is not None and lines and not out:
        out.append(stub(lines[-1]))
        dropped -= 1
        changed += out[-1] != lines[-1]
    return out, changed, dropped


def prepare(
    path: Path, revise: Revise, stub: Callable[[bytes], bytes] | None = None
) -> Prepared | None:
    """Revise the file's complete lines into its aside file; None if nothing would change (or
    the file is gone)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return None
    with handle:
        status = os.fstat(handle.fileno())
        data = handle.read()
    read_to = data.rfind(b"\n") + 1
    lines = [line for line in data[:read_to].split(b"\n")[:-1] if line]
    out, changed, dropped = revise_lines(lines, revise, stub)
    if not changed and not dropped:
        return None
    aside = aside_path(path)
    _write(aside, b"".join(line + b"\n" for line in out), status.st_mode & 0o777)
    return Prepared(
        path, (status.st_dev, status.st_ino), read_to, aside, changed, dropped, len(out)
    )


def commit(
    prepared: Prepared, revise: Revise, before_rename: Callable[[], None] = lambda: None
) -> bool:
    """Put the aside file in the original's place; False (and nothing changed) if the original
    is no longer the file that was prepared. Lines appended since `prepare` are revised and
    added first; `before_rename` is for tests that crash between the steps."""
    path, aside = prepared.path, prepared.aside
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        discard(prepared)
        return False
    with handle:
        status = os.fstat(handle.fileno())
        if (status.st_dev, status.st_ino) != prepared.identity or status.st_size < prepared.read_to:
            discard(prepared)
            return False
        handle.seek(prepared.read_to)
        tail = handle.read()
    if tail:
        # Complete lines are revised; an unfinished last line (a crash mid-write, never
        # acknowledged) is carried over as it is, for recovery to cut.
        end = tail.rfind(b"\n") + 1
        added, changed, dropped = revise_lines(
            [line for line in tail[:end].split(b"\n")[:-1] if line], revise
        )
        prepared.changed += changed
        prepared.dropped += dropped
        prepared.kept += len(added)
        _append(aside, b"".join(line + b"\n" for line in added) + tail[end:])
    before_rename()
    os.rename(aside, path)
    fsync_directory(path.parent)
    return True


def rewrite(path: Path, revise: Revise, stub=None, before_rename=lambda: None) -> Prepared | None:
    """Prepare and commit at once (no one else writes the file); what changed, or None."""
    prepared = prepare(path, revise, stub)
    if prepared is None:
        return None
    if not commit(prepared, revise, before_rename):
        raise FileNotFoundError(f"{path} was replaced while it was being rewritten")
    return prepared


def discard(prepared: Prepared) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(prepared.aside)


def remove_stale(directory: Path) -> list[Path]:
    """Remove aside files a crash left behind (they are never the only copy of anything)."""
    removed = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(ASIDE_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = 0o640) -> None:
    """A small file replaced whole (the moderation state, erasure reports)."""
    aside = aside_path(path)
    _write(aside, data, mode)
    os.rename(aside, path)
    fsync_directory(path.parent)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
