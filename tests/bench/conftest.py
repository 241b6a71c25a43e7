"""What the bench smoke tests share: run bench/run.py at --quick scale, read what it recorded."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
RUN = ROOT / "bench" / "run.py"


@pytest.fixture
def run_quick(tmp_path) -> Callable[..., tuple[str, list[dict]]]:
    """run_quick(scenario, server, open_files=None): bench/run.py --quick for one scenario and
    server, under a lower hard open-file limit when `open_files` is given (the harness, its
    servers and the loadgen all inherit it); (its stdout, its JSON records)."""

    def run(scenario: str, server: str, open_files: int | None = None):
        results = tmp_path / f"results-{scenario}-{server}.jsonl"

        def lower_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        completed = subprocess.run(
            [
                sys.executable,
                str(RUN),
                "--quick",
                "--scenarios",
                scenario,
                "--servers",
                server,
                "--results",
                str(results),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            preexec_fn=lower_limit if open_files else None,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        records = [json.loads(line) for line in results.read_text().splitlines()]
        return completed.stdout, records

    return run
