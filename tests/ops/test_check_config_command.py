"""`chatd check-config`: the daemon's own start-up checks and messages, as a command.

The expected message of each broken file is the one the daemon's code raises for it
(`load_config`, `tls.server_options`, `auth.authenticator_for`), pinned to the right file,
section and key, so that
these tests follow the daemon's wording instead of copying it; one test compares with a real
`twistd chatd` refusing to start.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme

from chatd import tls
from chatd.auth import MIN_SECRET_BYTES, authenticator_for
from chatd.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def daemon_message(path: Path) -> str:
    """What the daemon says when it refuses to start with this file."""
    try:
        config = load_config(path)
        if config.tls.certificate is not None:
            tls.server_options(config.tls, config.source, datetime.now(UTC))
        authenticator_for(config.auth, config.source)
    except ConfigError as error:
        return str(error)
    raise AssertionError(f"{path} is not broken")


def assert_rejected(result: subprocess.CompletedProcess, path: Path, where: str, what: str):
    """Exit 1, nothing on stdout, and exactly the daemon's line on stderr."""
    message = daemon_message(path)
    assert message.startswith(f"{path}: {where}") and what in message, message
    assert (result.returncode, result.stdout) == (1, b""), result
    assert result.stderr.decode() == message + "\n"


def test_the_sample_configuration_is_ok(run_script):
    result = run_script("chatd", "check-config", "--config", "etc/chatd.ini", cwd=ROOT)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"etc/chatd.ini: ok\n", b"")


def test_without_config_it_reads_etc_chatd_ini_under_the_working_directory(run_script, tmp_path):
    (tmp_path / "etc").mkdir()
    ini = tmp_path / "etc" / "chatd.ini"
    ini.write_text("[ws]\nport = banana\n")
    result = run_script("chatd", "check-config", cwd=tmp_path)
    assert_rejected(result, ini, "[ws] port: ", "'banana'")


@pytest.mark.parametrize(
    ("ini", "where", "what"),
    [
        ("[bogus]\nx = 1\n", "[bogus]", "unknown section"),
        ("[ws]\ncolour = blue\n", "[ws] colour: ", "unknown key"),
        ("[ws]\nport = banana\n", "[ws] port: ", "'banana'"),
        ("[ws]\nport = 8080\n[wss]\nport = 8080\n", "[wss] port: ", "8080"),
        (
            "[tls]\ncertificate = /nonexistent/cert.pem\nkey = /nonexistent/key.pem\n",
            "[tls] certificate: ",
            "/nonexistent/cert.pem does not exist",
        ),
    ],
    ids=["unknown-section", "unknown-key", "bad-value", "port-clash", "missing-certificate"],
)
def test_a_broken_configuration_gets_the_daemons_one_line_error(
    run_script, tmp_path, ini, where, what
):
    path = tmp_path / "chatd.ini"
    path.write_text(ini)
    assert_rejected(run_script("chatd", "check-config", "--config", path), path, where, what)


def test_a_missing_file_is_named(run_script, tmp_path):
    path = tmp_path / "absent.ini"
    result = run_script("chatd", "check-config", "-c", path)
    assert_rejected(result, path, "cannot read: ", "No such file")


def test_the_line_is_the_one_twistd_chatd_stops_with(run_script, tmp_path):
    path = tmp_path / "chatd.ini"
    path.write_text("[ws]\nport = banana\n")
    twistd = Path(sys.executable).with_name("twistd")
    daemon = subprocess.run(
        [twistd, "--nodaemon", "--pidfile=", "chatd", "--config", path],
        capture_output=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert daemon.returncode == 1, daemon
    checked = run_script("chatd", "check-config", "--config", path)
    assert checked.stderr.decode().strip() == daemon.stderr.decode().strip().splitlines()[-1]


# -- [tls], checked with tls.server_options as the daemon does when wss is enabled --------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def issue(ca: trustme.CA, directory: Path, name: str) -> tuple[Path, Path]:
    """(certificate chain, key) PEM files for localhost."""
    leaf = ca.issue_cert("localhost")
    certificate, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    certificate.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(key)
    return certificate, key


def write_tls_ini(tmp_path: Path, certificate: Path, key: Path, wss: bool = True) -> Path:
    path = tmp_path / "chatd.ini"
    path.write_text(
        f"[wss]\nenabled = {'yes' if wss else 'no'}\n"
        f"[tls]\ncertificate = {certificate}\nkey = {key}\n"
    )
    return path


def test_a_matching_certificate_and_key_are_ok(run_script, tmp_path, ca):
    path = write_tls_ini(tmp_path, *issue(ca, tmp_path, "good"))
    result = run_script("chatd", "check-config", "--config", path)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{path}: ok\n".encode(), b"")


def test_the_key_of_another_certificate_is_rejected(run_script, tmp_path, ca):
    certificate, _key = issue(ca, tmp_path, "one")
    _certificate, other_key = issue(ca, tmp_path, "two")
    path = write_tls_ini(tmp_path, certificate, other_key)
    result = run_script("chatd", "check-config", "--config", path)
    assert_rejected(result, path, "[tls] key: ", "does not match the certificate")


def test_a_file_without_a_pem_certificate_is_rejected(run_script, tmp_path, ca):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    path = write_tls_ini(tmp_path, not_pem, issue(ca, tmp_path, "good")[1])
    result = run_script("chatd", "check-config", "--config", path)
    assert_rejected(result, path, "[tls] certificate: ", "no PEM certificate")


def test_the_certificate_is_not_loaded_when_wss_is_disabled(run_script, tmp_path, ca):
    """Like the daemon, which builds no TLS context without a wss listener."""
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    path = write_tls_ini(tmp_path, not_pem, issue(ca, tmp_path, "good")[1], wss=False)
    result = run_script("chatd", "check-config", "--config", path)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{path}: ok\n".encode(), b"")


# -- [auth] ---------------------------------------------------------------------------------------


def write_auth_ini(tmp_path: Path, secret: bytes) -> Path:
    secret_file = tmp_path / "jwt-secret"
    secret_file.write_bytes(secret)
    path = tmp_path / "chatd.ini"
    path.write_text(f"[auth]\nmode = token\nsecret_file = {secret_file}\n")
    return path


def test_a_long_enough_token_secret_is_ok(run_script, tmp_path):
    path = write_auth_ini(tmp_path, b"s" * MIN_SECRET_BYTES)
    result = run_script("chatd", "check-config", "--config", path)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{path}: ok\n".encode(), b"")


def test_a_short_token_secret_is_rejected(run_script, tmp_path):
    path = write_auth_ini(tmp_path, b"s" * (MIN_SECRET_BYTES - 1))
    result = run_script("chatd", "check-config", "--config", path)
    assert_rejected(result, path, "[auth] secret_file: ", f"fewer than {MIN_SECRET_BYTES} bytes")
