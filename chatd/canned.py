"""Canned responses: replies the operator writes once, in `[support] canned_file`, that agents
insert in their composer by a short key.

The file is plain text, one response per line: `key: text`, where the key is 1-32 of
`a-z 0-9 _ -` and `\\n` in the text stands for a line break; blank lines and lines starting
with `#` are skipped. It is read at start (a mistake stops the daemon, naming the line) and
again on SIGHUP (a mistake then keeps the responses in force, and is logged).
"""

from __future__ import annotations

import re
from pathlib import Path

KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
MAX_RESPONSES = 1000
MAX_TEXT_CHARS = 4000


class CannedFileError(ValueError):
    """What is wrong with the file, and on which line."""


def parse_canned(text: str) -> list[dict[str, str]]:
    responses: list[dict[str, str]] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, colon, body = stripped.partition(":")
        key, body = key.strip(), body.strip().replace("\\n", "\n")
        if not colon or not KEY.fullmatch(key):
            raise CannedFileError(
                f"line {number}: expected 'key: text' with a key of 1-32 of a-z 0-9 _ -"
            )
        if not body:
            raise CannedFileError(f"line {number}: {key!r} has no text")
        if len(body) > MAX_TEXT_CHARS:
            raise CannedFileError(f"line {number}: {key!r} is over {MAX_TEXT_CHARS} characters")
        if key in seen:
            raise CannedFileError(f"line {number}: {key!r} appears twice")
        seen.add(key)
        responses.append({"key": key, "text": body})
    if len(responses) > MAX_RESPONSES:
        raise CannedFileError(f"more than {MAX_RESPONSES} responses")
    return responses


def load_canned(path: Path | None) -> list[dict[str, str]]:
    """The responses in `path` (none without a file); raises CannedFileError or OSError."""
    if path is None:
        return []
    try:
        return parse_canned(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise CannedFileError(f"not UTF-8 text ({error.reason})") from None
