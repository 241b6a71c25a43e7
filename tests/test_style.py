"""`ruff check` is part of the test command, so style problems fail CI like any other test."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_check_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_test_modules_have_unique_names():
    """The test directories have no __init__.py: pytest imports each test file by its bare
    name, so two files of one name break the collection of the whole suite."""
    seen: dict[str, Path] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        assert path.name not in seen, f"{path} has the name of {seen[path.name]}"
        seen[path.name] = path
