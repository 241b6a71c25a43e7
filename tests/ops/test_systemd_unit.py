"""etc/chatd.service and etc/chatd@.service (Redis mode's template, one node per instance):
the directives the README promises, and systemd's own verdict on each."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatd.openfiles import MARGIN

ETC = Path(__file__).resolve().parents[2] / "etc"
UNIT = ETC / "chatd.service"
TEMPLATE = ETC / "chatd@.service"
INSTALLED_BIN = "/opt/chatd/venv/bin/"  # the install layout the unit and the README use


def read_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, in order: systemd keys may repeat (configparser refuses)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        header = re.fullmatch(r"\[(.+)\]", line)
        if header:
            section = sections.setdefault(header[1], {})
            continue
        key, separator, value = line.partition("=")
        assert separator and section is not None, f"not a unit file line: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


SERVICE = read_unit(UNIT.read_text())["Service"]
TEMPLATE_SERVICE = read_unit(TEMPLATE.read_text())["Service"]
SHARED = [
    ("User", "chatd"),
    ("Group", "chatd"),
    ("WorkingDirectory", "/var/lib/chatd"),
    ("Restart", "on-failure"),
    ("KillSignal", "SIGTERM"),
    ("UMask", "0027"),
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ReadWritePaths", "/var/lib/chatd"),
    ("PrivateTmp", "yes"),
    ("ProtectHome", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectControlGroups", "yes"),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"),
    ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""),
]


def start_command(config: str) -> str:
    return f"{INSTALLED_BIN}twistd --nodaemon --pidfile= chatd --config {config}"


@pytest.mark.parametrize(
    ("key", "value"), [("ExecStart", start_command("/etc/chatd/chatd.ini")), *SHARED]
)
def test_directive(key, value):
    assert SERVICE.get(key) == [value]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ExecStart", start_command("/etc/chatd/chatd-%i.ini")),
        ("SyslogIdentifier", "chatd-%i"),
        *SHARED,
    ],
)
def test_template_directive(key, value):
    """Each node its own configuration file; the same user, layout and confinement."""
    assert TEMPLATE_SERVICE.get(key) == [value]


def test_the_template_hardens_the_node_as_the_single_unit_does():
    ignored = {"ExecStart", "ExecReload", "SyslogIdentifier"}
    assert {k: v for k, v in TEMPLATE_SERVICE.items() if k not in ignored} == {
        k: v for k, v in SERVICE.items() if k not in ignored
    }


@pytest.mark.parametrize(
    ("service", "config"),
    [(SERVICE, "/etc/chatd/chatd.ini"), (TEMPLATE_SERVICE, "/etc/chatd/chatd-%i.ini")],
)
def test_reload_checks_the_configuration_before_signalling_the_daemon(service, config):
    assert service["ExecReload"] == [
        f"{INSTALLED_BIN}chatd check-config --config {config}",
        "/bin/kill -HUP $MAINPID",
    ]


def test_the_open_file_limit_holds_100000_connections_and_their_rooms():
    """One descriptor per connection, one per open room's transcript (rooms of 10 at the
    least), and chatd's margin (chatd/openfiles.py): issue 16 asks for 100,000 connections."""
    [limit] = SERVICE["LimitNOFILE"]
    assert int(limit) >= 100_000 + 100_000 // 10 + MARGIN


def test_system_calls_are_limited_to_those_of_a_system_service():
    assert SERVICE["SystemCallFilter"][0] == "@system-service"


def test_stop_timeout_is_set():
    assert re.fullmatch(r"\d+s?", SERVICE["TimeoutStopSec"][0])


def test_memory_deny_write_execute_stays_off():
    """pyOpenSSL's cffi callbacks need writable code: with it, wss could not start."""
    assert "MemoryDenyWriteExecute" not in SERVICE


# -- systemd-analyze ----------------------------------------------------------------------------

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (Debian: apt-get install systemd)",
)


@pytest.fixture(params=["chatd.service", "chatd@node1.service"])
def local_unit(request, tmp_path) -> Path:
    """The unit (the template as its instance node1) with its /opt/chatd/venv commands
    pointed at this venv, whose binaries exist: `verify` rejects a unit whose commands are
    missing. An instance is the template's file under the instance's name: systemd finds its
    template beside it."""
    venv_bin = f"{Path(sys.executable).parent}/"
    assert Path(venv_bin, "twistd").exists() and Path(venv_bin, "chatd").exists()
    source = UNIT if request.param == "chatd.service" else TEMPLATE
    (tmp_path / source.name).write_text(source.read_text().replace(INSTALLED_BIN, venv_bin))
    path = tmp_path / request.param
    if path.name != source.name:
        path.symlink_to(source.name)
    return path


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_unit(local_unit):
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", local_unit], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_systemd_analyze_security_rates_the_unit_ok(local_unit):
    """Exposure at most 2.0 of 10 (the threshold is in tenths); systemd 252 rates it 1.3."""
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20", local_unit],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in result.stderr:
        pytest.skip(f"systemd-analyze is too old for security --offline: {result.stderr.strip()}")
    assert result.returncode == 0, result.stdout + result.stderr
