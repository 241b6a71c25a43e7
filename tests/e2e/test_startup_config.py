"""A bad configuration stops the daemon at start with one clear line: file, [section] key."""

from __future__ import annotations

import subprocess
from datetime import datetime

import pytest
from chatd_harness import STOP_TIMEOUT, run_twistd, write_ini

EXIT_TIMEOUT = 10.0


def start_and_fail(tmp_path, sections: dict, names_file: bool = True) -> str:
    """Run twistd chatd on this configuration; it must exit non-zero, quickly. Its output."""
    config = write_ini(tmp_path / "bad.ini", sections)
    log = tmp_path / "twistd.log"
    process = run_twistd(config, tmp_path, log)
    try:
        code = process.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)
        raise AssertionError(
            f"chatd did not exit on a bad configuration:\n{log.read_text()}"
        ) from None
    output = log.read_text()
    assert code != 0, output
    assert "Traceback" not in output, output
    if names_file:
        assert str(config) in output, output
    return output


@pytest.fixture
def base(server_cert, tmp_path) -> dict:
    certificate, key = server_cert
    return {
        "ws": {"port": 0},
        "wss": {"port": 0},
        "tls": {"certificate": certificate, "key": key},
        "transcripts": {"directory": tmp_path / "transcripts"},
        "metrics": {"port": 0},
    }


def test_a_port_that_is_not_a_number(tmp_path, base):
    base["ws"]["port"] = "banana"
    output = start_and_fail(tmp_path, base)
    assert "[ws] port:" in output
    assert "banana" in output


def test_an_unknown_section(tmp_path, base):
    base["chat"] = {"port": 1}
    output = start_and_fail(tmp_path, base)
    assert "[chat]" in output
    assert "unknown section" in output


def test_an_unknown_key(tmp_path, base):
    base["limits"] = {"max_message_byte": 2048}
    output = start_and_fail(tmp_path, base)
    assert "[limits] max_message_byte:" in output


def test_a_missing_certificate_file(tmp_path, base):
    missing = tmp_path / "nowhere" / "cert.pem"
    base["tls"]["certificate"] = missing
    output = start_and_fail(tmp_path, base)
    assert "[tls] certificate:" in output
    assert str(missing) in output


def test_a_key_that_does_not_match_the_certificate(tmp_path, base, ca):
    other = ca.issue_cert("localhost")
    key = tmp_path / "other-key.pem"
    key.write_bytes(other.private_key_pem.bytes())
    base["tls"]["key"] = key
    output = start_and_fail(tmp_path, base)
    assert "[tls] key:" in output


def test_a_certificate_file_that_is_not_pem(tmp_path, base):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    base["tls"]["certificate"] = garbage
    output = start_and_fail(tmp_path, base)
    assert "[tls] certificate:" in output


def test_replay_events_over_memory_events(tmp_path, base):
    base["history"] = {"memory_events": 10, "replay_events": 20}
    output = start_and_fail(tmp_path, base)
    assert "[history] replay_events:" in output


def test_a_port_already_in_use(tmp_path, base, daemon):
    base["ws"]["port"] = daemon.ports["ws"]
    output = start_and_fail(tmp_path, base, names_file=False)
    assert "[ws]" in output
    assert f"127.0.0.1:{daemon.ports['ws']}" in output


def test_an_expired_certificate(tmp_path, base, ca):
    expired = ca.issue_cert("localhost", not_after=datetime(2024, 2, 29, 12, 0))
    certificate, key = tmp_path / "expired.pem", tmp_path / "expired-key.pem"
    certificate.write_bytes(expired.cert_chain_pems[0].bytes())
    key.write_bytes(expired.private_key_pem.bytes())
    base["tls"] = {"certificate": certificate, "key": key}
    output = start_and_fail(tmp_path, base)
    assert "[tls] certificate: expired on 2024-02-29 12:00:00 UTC" in output


def test_a_canned_file_with_a_mistake_names_the_line(tmp_path, base):
    canned = tmp_path / "canned.txt"
    canned.write_text("# greetings\nhello: Hello! How can I help?\nBad Key: text\n")
    base["support"] = {"enabled": "yes", "canned_file": canned}
    output = start_and_fail(tmp_path, base)
    assert "[support] canned_file: line 3:" in output
