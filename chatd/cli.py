"""The `chatd` operator command: one subcommand per job (`chatd check-config`, ...).

The daemon itself is `twistd chatd`; this command works beside it, reading the configuration
exactly as the daemon does, so that what it checks is what the daemon will load.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from chatd.config import Config, ConfigError, load_daemon_config, parse_duration

CONFIG_HELP = (
    "the INI file; default, as for the daemon: etc/chatd.ini under the working directory,"
    " else /etc/chatd/chatd.ini, else the embedded defaults"
)


def check_files(config: Config) -> None:
    """The daemon's start-up checks of the files the configuration names: raises ConfigError.

    Mirrors what `tap.makeService` loads before it listens (the transcript directory aside:
    the daemon creates it, and a check should not).
    """
    # Imported here: Twisted's TLS stack takes a tenth of a second to import, and
    # chatd-transcript, which shares this module, has no use for it.
    from chatd import tls
    from chatd.auth import authenticator_for

    if config.wss.enabled and config.tls.certificate is not None:
        tls.server_options(config.tls, config.source, datetime.now(UTC))
    authenticator_for(config.auth, config.source)


def check_config(args: argparse.Namespace) -> int:
    """Run the daemon's start-up checks on the configuration, without starting anything."""
    try:
        config = load_daemon_config(args.config)
        check_files(config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{config.source}: ok")
    return 0


def mint(args: argparse.Namespace) -> int:
    """Print a token the daemon's [auth] settings accept, for operators and tests."""
    from chatd.auth import mint_token

    ttl = parse_duration(args.ttl)
    if ttl is None or ttl <= 0:
        print(f"chatd token: --ttl must be a duration such as 30m or 1h, got {args.ttl!r}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        config = load_daemon_config(args.config)
        auth = config.auth
        if auth.algorithm == "HS256" and auth.secret_file is None:
            raise ConfigError(config.source, "auth", "secret_file", "is needed to sign tokens")
        if auth.algorithm != "HS256" and args.signing_key is None:
            print(f"chatd token: {auth.algorithm} tokens are signed with the identity provider's"
                  " private key: pass --signing-key FILE", file=sys.stderr)  # fmt: skip
            return 2
        signing_key = args.signing_key.read_bytes() if args.signing_key else None
        token = mint_token(
            auth,
            args.user,
            roles=args.role,
            ttl=ttl,
            now=time.time(),
            name=args.name,
            signing_key=signing_key,
            token_id=args.jti or secrets.token_hex(8),
        )
    except (ConfigError, OSError) as error:
        print(error, file=sys.stderr)
        return 1
    if auth.mode != "token":
        print(f"{config.source}: note: [auth] mode is {auth.mode}; the daemon ignores tokens",
              file=sys.stderr)  # fmt: skip
    print(token)
    return 0


def webhooks_status(args: argparse.Namespace) -> int:
    """Print each webhook endpoint's lag, last error and next retry, from the status files the
    daemon writes next to its cursors ([webhooks] state_directory)."""
    from chatd.webhook_state import load_status, status_path

    try:
        config = load_daemon_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    endpoints = config.webhooks.endpoints
    if not endpoints:
        print(f"{config.source}: no [webhook:NAME] endpoint is configured")
        return 0
    directory = config.webhooks.state_directory
    for endpoint in endpoints:
        try:
            status = load_status(status_path(directory, endpoint.name))
        except (OSError, ValueError) as error:
            print(f"{endpoint.name}: cannot read its status in {directory}: {error}")
            continue
        if status is None:
            print(f"{endpoint.name}: {endpoint.url}: no status yet (has the daemon run?)")
            continue
        print(
            f"{endpoint.name}: {endpoint.url}\n"
            f"  lag: {status.get('lag')} events in {status.get('rooms_behind')} rooms\n"
            f"  delivered: {status.get('delivered')} events since the daemon started\n"
            f"  last delivery: {status.get('last_delivery_at') or '-'}\n"
            f"  last error: {status.get('last_error') or '-'}"
            f" ({status.get('failures')} failures in a row)\n"
            f"  next retry: {status.get('next_retry_at') or '-'}\n"
            f"  as of: {status.get('updated_at')}"
        )
    return 0


def archive(args: argparse.Namespace) -> int:
    """Run the archiver (chatd/redis/archiver.py) outside the daemon: until SIGTERM, or with
    --once until every room's events are in the transcripts."""
    try:
        config = load_daemon_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    if not config.redis.enabled:
        print(f"chatd archive: {config.source}: [redis] url is empty: there is nothing to"
              " archive", file=sys.stderr)  # fmt: skip
        return 1
    from twisted.internet import task
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    from chatd.transcript import Rotation, TranscriptStore

    transcripts = config.transcripts
    rotation = Rotation(daily=transcripts.rotate == "daily", max_bytes=transcripts.rotate_size)
    store = TranscriptStore(transcripts.directory, rotation)
    try:
        store.prepare()
    except OSError as error:
        print(f"chatd archive: cannot use {store.directory}: {error}", file=sys.stderr)
        return 1
    # chatd's own lines; of Twisted's (a factory started, a retry scheduled), warnings only.
    levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    levels.setLogLevelForNamespace("twisted", LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [levels])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    try:
        task.react(_archive_once if args.once else _archive_until_stopped, (config, store))
    except SystemExit as stopped:
        return stopped.code
    return 0


def _archiver(reactor, config: Config, store):
    """The link and the archiver `chatd archive` runs."""
    from chatd.redaction import TranscriptEditor
    from chatd.redis.archiver import SCRIPTS, Archiver
    from chatd.redis.client import RedisLink
    from chatd.redis.keys import Keys

    redis = config.redis
    link = RedisLink(reactor, redis, SCRIPTS, name="archiver")
    # Never the daemon's node name: two holders of one name would both "renew" the lease.
    node = f"chatd-archive@{socket.gethostname()}:{os.getpid()}"
    archiver = Archiver(
        reactor,
        link,
        Keys(redis.key_prefix),
        store,
        node,
        lease=redis.node_lease,
        fsync=True,  # it trims from Redis only what it made durable
        keep=config.history.memory_events,
        editor=TranscriptEditor(store),  # edits and deletions reach the files it writes
    )
    return link, archiver


async def _archive_until_stopped(reactor, config: Config, store) -> None:
    from twisted.internet.defer import Deferred

    link, archiver = _archiver(reactor, config, store)
    link.start()
    archiver.start()
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: archiver.stop().addBoth(lambda _: link.stop())
    )
    await Deferred()  # never fires: SIGTERM stops the reactor, and `react` exits 0


async def _archive_once(reactor, config: Config, store) -> None:
    from twisted.internet.defer import Deferred, TimeoutError

    from chatd.redis.archiver import LeaseHeld, LeaseLost
    from chatd.redis.client import RedisError, RedisUnavailable

    redis, address = config.redis, config.redis.address
    link, archiver = _archiver(reactor, config, store)
    connected: Deferred = Deferred()
    link.on_up.append(lambda _protocol: connected.called or connected.callback(None))
    connected.addTimeout(redis.connect_timeout, reactor)
    link.start()
    try:
        try:
            await connected
        except TimeoutError:
            print(f"chatd archive: cannot reach Redis at {address.host}:{address.port}"
                  f" within {redis.connect_timeout}s", file=sys.stderr)  # fmt: skip
            raise SystemExit(1) from None
        try:
            done = await archiver.drain()
        except (LeaseHeld, LeaseLost, RedisUnavailable, RedisError) as error:
            print(f"chatd archive: {error}", file=sys.stderr)
            raise SystemExit(1) from None
    finally:
        await link.stop()
        store.close()
    print(f"archived {done.written} events of {len(done.rooms)} rooms to {store.directory}")
    for gap in done.gaps:
        print(f"chatd archive: missing from Redis, never archived: {gap}", file=sys.stderr)
    for room, why in sorted(done.failed.items()):
        print(f"chatd archive: room {room} not archived: {why}; its events stay in Redis",
              file=sys.stderr)  # fmt: skip
    if done.failed or done.gaps:
        raise SystemExit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatd",
        description="Operator commands for the chatd daemon (which runs as `twistd chatd`).",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check-config",
        help="validate the configuration as the daemon would at start",
        description=(
            "Load the configuration the daemon would load and run its start-up checks on it,"
            " the files it names included: the [tls] certificate and key (when wss is enabled)"
            " and the [auth] key. Prints 'FILE: ok' and exits 0, or prints the daemon's one-line"
            " error and exits 1. Files are checked as the user running this command: run it as"
            " the daemon's user."
        ),
    )
    check.add_argument("--config", "-c", type=Path, metavar="FILE", help=CONFIG_HELP)
    check.set_defaults(run=check_config)

    token = commands.add_parser(
        "token",
        help="mint a token for a user (for operators and tests)",
        description=(
            "Print a JWT that the daemon's [auth] settings accept: signed with [auth]"
            " secret_file (HS256) or with --signing-key (RS256/ES256), carrying [auth] audience"
            " and issuer if set. Keep it secret: it is the user's identity until it expires."
        ),
    )
    token.add_argument("user", help="the user id (the token's sub)")
    token.add_argument("--role", action="append", default=[], help="a role; repeat for more")
    token.add_argument("--name", help="the display name (default: the user id)")
    token.add_argument("--ttl", default="1h", help="lifetime, e.g. 30m, 8h (default 1h)")
    token.add_argument(
        "--jti",
        help="the token's id, which [auth] revoked_file can name (default: a random one; read it"
        " back with any JWT decoder)",
    )
    token.add_argument("--signing-key", type=Path, metavar="FILE", help="PEM private key")
    token.add_argument("--config", "-c", type=Path, metavar="FILE", help=CONFIG_HELP)
    token.set_defaults(run=mint)

    webhooks = commands.add_parser(
        "webhooks",
        help="webhook delivery: `chatd webhooks status`",
        description="Webhook delivery, as the daemon last reported it.",
    )
    webhook_commands = webhooks.add_subparsers(metavar="ACTION", required=True)
    status = webhook_commands.add_parser(
        "status",
        help="each endpoint's lag, last error and next retry",
        description=(
            "Print each [webhook:NAME] endpoint's lag (events written and not yet delivered),"
            " last error and next retry, from NAME.status.json in [webhooks] state_directory,"
            " which the daemon rewrites as it delivers (about once a second while busy)."
        ),
    )
    status.add_argument("--config", "-c", type=Path, metavar="FILE", help=CONFIG_HELP)
    status.set_defaults(run=webhooks_status)

    archiver = commands.add_parser(
        "archive",
        help="write the rooms' events from Redis to the transcripts (Redis mode)",
        description=(
            "Be the archiver of a chatd cluster on Redis ([redis] url) outside the daemon:"
            " append each room's events from Redis to its transcript under [transcripts]"
            " directory, fsync as [transcripts] fsync says, then trim the stream to [history]"
            " memory_events. One archiver at a time: it takes the lease the daemons' archiver"
            " role takes, and stands by while another holds it. Runs until SIGTERM."
        ),
    )
    archiver.add_argument(
        "--once",
        action="store_true",
        help="archive every room's events and exit: 0 when all are written, 1 (saying why) if"
        " Redis is unreachable, another process holds the lease, a transcript cannot be"
        " written (its events stay in Redis), or events were missing from Redis",
    )
    archiver.add_argument("--config", "-c", type=Path, metavar="FILE", help=CONFIG_HELP)
    archiver.set_defaults(run=archive)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)
