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
    raised_from = None
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
            raised_from, soft = soft, hard
    if soft == resource.RLIM_INFINITY:
        log.info("open-file limit: none, so it puts no bound on connections")
        return soft
    # The operator's question at start: how many clients can this process hold?
    room = max(soft - MARGIN, 0)
    if raised_from is not None:
        log.info(
            "open-file limit raised from {soft} to {hard}: room for about {room} connections",
            soft=raised_from,
            hard=hard,
            room=room,
        )
    else:
        log.info(
            "open-file limit {limit} (hard limit {hard}): room for about {room} connections",
            limit=soft,
            hard=hard,
            room=room,
        )
    needed = max_connections + MARGIN
    if soft < needed:
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
