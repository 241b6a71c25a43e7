"""JSON log lines for journald and log collectors: `twistd --logger chatd.logs.json_to_stdout`.

One object per line: time (UTC ISO-8601), level, namespace, the rendered message, the named
fields the message was formatted from (peer, user, room, code, ...), and a traceback if any.
"""

from __future__ import annotations

import json
import string
import sys
from datetime import UTC, datetime

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

_formatter = string.Formatter()


@implementer(ILogObserver)
class JSONLinesObserver:
    def __init__(self, out):
        self._out = out

    def __call__(self, event: dict) -> None:
        record = {
            "time": datetime.fromtimestamp(event["log_time"], UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": event["log_level"].name if "log_level" in event else "info",
            "namespace": event.get("log_namespace", "-"),
            "message": formatEvent(event),
        }
        for field in _fields_of(event.get("log_format")):
            if field in event and field not in record and not field.startswith("log_"):
                record[field] = event[field]
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        self._out.write(json.dumps(record, default=repr) + "\n")
        self._out.flush()


def _fields_of(log_format: str | None) -> list[str]:
    if not log_format:
        return []
    try:
        return [name for _text, name, _spec, _conv in _formatter.parse(log_format) if name]
    except ValueError:
        return []


def json_to_stdout() -> JSONLinesObserver:
    """The observer factory twistd's --logger option names."""
    return JSONLinesObserver(sys.stdout)
