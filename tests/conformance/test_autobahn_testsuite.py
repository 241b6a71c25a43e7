"""Autobahn|Testsuite's fuzzing client against chatd's listener stack (echo_listener.py), with
`[limits] compression = yes`.

The testsuite is Python 2.7 software: `make test` installs it under build/wstest when the
machine has a Python 2.7 (this test is skipped, saying so, when it has none). CI runs the
permessage-deflate cases (12.*, 13.*) for every parameter combination and data set up to
8 KiB messages, and the framing, UTF-8 and closing cases (1-7, 10) with compression
negotiated; the full 12.* and 13.* run (256 KiB messages, ~25 minutes) is
`CHATD_WSTEST_CASES='12.*,13.*' make test PYTEST_ARGS=tests/conformance`, recorded in
docs/security.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WSTEST = ROOT / "build" / "wstest"
ECHO = Path(__file__).with_name("echo_listener.py")
# Case ids are exact, or prefixes with "*": every data set (12.N) and offer (13.N) of the
# deflate cases, with messages of 16 B to 8 KiB (M 1-6) and auto-fragmented (M 11).
DEFLATE_CASES = [
    f"{group}.{variant}.{size}"
    for group, variants in ((12, 5), (13, 7))
    for variant in range(1, variants + 1)
    for size in (1, 2, 3, 4, 5, 6, 11)
]
CASES = [*DEFLATE_CASES, "1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"]
# Strict conformance, or a case that only reports. "NON-STRICT" (a permitted variant, which chatd
# has never needed), "UNIMPLEMENTED" (compression not negotiated) and "FAILED" are failures.
PASSING = {"OK", "INFORMATIONAL"}

CONFIG = """\
[transcripts]
directory = {transcripts}
[limits]
compression = yes
max_message_bytes = 16M
max_buffered_bytes = 64M
ping_interval = 0
max_connections_per_ip = 1000
messages_per_second = 1000000
message_burst = 1000000
[auth]
hello_timeout = 1h
[metrics]
enabled = no
"""


@pytest.fixture
def echo_listener(tmp_path):
    """The echo listener in a process of its own; yields its port."""
    config = tmp_path / "echo.ini"
    config.write_text(CONFIG.format(transcripts=tmp_path / "transcripts"))
    log = (tmp_path / "echo.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(ECHO), str(config)], stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        port = process.stdout.readline().strip()
        assert port.isdigit(), (
            f"the echo listener did not start: {(tmp_path / 'echo.log').read_text()}"
        )
        yield int(port)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_the_autobahn_testsuite_passes_with_compression_on(echo_listener, tmp_path):
    python = WSTEST / "python"
    if not python.exists():
        pytest.skip("Autobahn|Testsuite needs Python 2.7, and this machine has none")
    cases = os.environ.get("CHATD_WSTEST_CASES")
    spec = {
        "outdir": str(tmp_path / "reports"),
        "servers": [{"agent": "chatd", "url": f"ws://127.0.0.1:{echo_listener}/ws"}],
        "cases": cases.split(",") if cases else CASES,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    run = (
        "import site, sys; site.addsitedir(sys.argv[1]); "
        "sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', sys.argv[2]]; "
        "from autobahntestsuite.wstest import run; run()"
    )
    result = subprocess.run(
        [str(python), "-c", run, str(WSTEST / "site"), str(tmp_path / "spec.json")],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "reports" / "index.json").read_text())["chatd"]
    compression = [case for case in report if case.startswith(("12.", "13."))]
    assert compression, "no permessage-deflate case ran"
    failed = {
        case: (outcome["behavior"], outcome["behaviorClose"])
        for case, outcome in report.items()
        if outcome["behavior"] not in PASSING or outcome["behaviorClose"] not in PASSING
    }
    assert failed == {}, f"{len(failed)} of {len(report)} cases did not pass"
