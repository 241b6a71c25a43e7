"""The `chatd` operator command: one subcommand per job (`chatd check-config`, ...).

The daemon itself is `twistd chatd`; this command works beside it, reading the configuration
exactly as the daemon does, so that what it checks is what the daemon will load.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chatd.config import Config, ConfigError, find_config_file, load_config

CONFIG_HELP = (
    "the INI file; default, as for the daemon: etc/chatd.ini under the working directory,"
    " else /etc/chatd/chatd.ini, else the embedded defaults"
)


def load_daemon_config(path: Path | None) -> Config:
    """The configuration `twistd chatd [--config path]` would load if started here."""
    return load_config(path or find_config_file(Path.cwd()))


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
        tls.server_options(config.tls, config.source)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)
