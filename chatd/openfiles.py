"""The open-file limit at start: every connection, listener and room transcript holds a
file descriptor, and a daemon at its limit cannot accept (sendnow.SendNowPort backs off).

The soft limit (often 1024) is raised to the hard one, as the process may do by itself; if
`[limits] max_connections` still does not fit, the log says what to raise.
"""

from __future__ import annotations

import resource

from twisted.logger import Logger

# Descriptors besides the connections: the open rooms' transcripts, the log, epoll,
# Twisted's reserved descriptor and waker, the listening sockets.
MARGIN = 256

log = Logger()


def ensure_open_files(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; warn if `max_connections` plus the
    margin does not fit under it. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as error:
            log.warn(
                "could not raise the open-file limit from {soft} to {hard}: {error}",
                soft=soft,
                hard=hard,
                error=error,
            )
        else:
            log.info("open-file limit raised from {soft} to {hard}", soft=soft, hard=hard)
            soft = hard
    needed = max_connections + MARGIN
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warn(
            "the open-file limit ({limit}) leaves room for about {room} connections, fewer"
            " than [limits] max_connections = {max_connections}: past that, new connections"
            " wait. Raise it to at least {needed} (LimitNOFILE= in the systemd unit,"
            " ulimit -n in a shell) or lower max_connections",
            limit=soft,
            room=max(soft - MARGIN, 0),
            max_connections=max_connections,
            needed=needed,
        )
    return soft
