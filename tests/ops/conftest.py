"""Fixtures for the operator tooling tests: the installed console scripts, run as subprocesses.

The scripts are the ones `pip install` generated next to this interpreter, so the tests cover
the `[project.scripts]` entries too, not only the functions behind them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

RunScript = Callable[..., subprocess.CompletedProcess]


def _installed(name: str) -> Path:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{path} is missing: reinstall chatd (see README) to get its console scripts")
    return path


@pytest.fixture
def installed_script() -> Callable[[str], Path]:
    """installed_script(name) -> the path of that console script."""
    return _installed


@pytest.fixture
def run_script() -> RunScript:
    """run_script(name, *args, cwd=None) -> CompletedProcess with bytes stdout and stderr."""

    def run(name: str, *args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [_installed(name), *map(str, args)], capture_output=True, cwd=cwd, timeout=30
        )

    return run
