"""The grammars of names chatd accepts: user ids, room names, client ids and epochs.

One definition each, shared by the wire format, the configuration and the transcript files
(a room name is part of a file name, so its grammar is what keeps paths inside the directory).
"""

from __future__ import annotations

import re

USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
EPOCH = re.compile(r"[a-z0-9]{1,32}")

ROOM_RULE = "a room name is 1-64 of a-z 0-9 '_' '-', starting with a letter or digit"
USER_RULE = "a name is 1-32 letters, digits, '_', '.' or '-', starting with a letter or digit"
