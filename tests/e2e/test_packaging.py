"""The wheel installs into a fresh virtualenv, and twistd there finds and runs chatd.

The wheel is built from a copy of the working tree (minus what .gitignore leaves out), so the
test never writes build output into the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "dropin.cache",
    "var",
    "tests",
)


def run(*command, cwd: Path, timeout: float) -> str:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new virtualenv with only the freshly built wheel (and its dependencies) installed."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    run(
        sys.executable,
        "-m",
        "build",
        "--wheel",
        "--outdir",
        tmp / "dist",
        source,
        cwd=tmp,
        timeout=120,
    )
    (wheel,) = (tmp / "dist").glob("chatd-*.whl")

    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/chatd_plugin.py" in names
    assert "chatd/tap.py" in names
    # Installing either of these would break Twisted itself (or its plugin cache).
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert not [name for name in names if name.endswith("dropin.cache")]
    static = sorted(
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "chatd" / "static").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )
    assert [name for name in static if name not in names] == []

    venv = tmp / "fresh"
    run(sys.executable, "-m", "venv", venv, cwd=tmp, timeout=60)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=tmp, timeout=180)
    return venv


def test_twistd_in_a_fresh_venv_lists_chatd(fresh_venv, tmp_path):
    twistd = fresh_venv / "bin" / "twistd"
    listing = run(twistd, "--help", cwd=tmp_path, timeout=60)
    commands = {line.split()[0] for line in listing.splitlines() if line.startswith("    ")}
    assert "chatd" in commands, listing
    assert "web" in commands, listing  # Twisted's own plugins are still there
    assert "--config" in run(twistd, "chatd", "--help", cwd=tmp_path, timeout=60)
    # The package is the wheel's, not this checkout's.
    where = run(
        fresh_venv / "bin" / "python",
        "-c",
        "import chatd; print(chatd.__file__)",
        cwd=tmp_path,
        timeout=60,
    )
    assert str(fresh_venv) in where, where


def test_the_installed_daemon_serves(fresh_venv, make_daemon, clients):
    daemon = make_daemon(twistd=fresh_venv / "bin" / "twistd")
    status, _type, body = daemon.get("ws", "/healthz")
    assert (status, json.loads(body)["status"]) == (200, "ok")
    alice = clients(daemon.url("wss"))
    alice.hello("alice")
    alice.join("lobby")
    message, _ack = alice.say("lobby", "from the wheel", "w-1")
    assert message["seq"] == 2
    daemon.stop()
    assert daemon.transcript("lobby")[1] == message
