"""Fixtures for the tests that run the real daemon (tests/e2e, tests/browser): a real
`twistd -n chatd` in a temporary directory, and clients for it.

Every daemon listens on 127.0.0.1 with port 0 (ws and wss), serves wss with a certificate for
localhost issued by a session-scoped test CA (trustme), and writes its transcripts under the
test's tmp_path. Its output goes to one log file per start; a failing test gets every log
attached to its report. The machinery itself lives in chatd_harness.py.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from chatd_harness import TWISTD, Client, Daemon, write_ini
from redis_harness import REDIS_SERVER, RedisServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def installed_chatd(tmp_path_factory) -> Path:
    """Where twistd imports chatd from; fails clearly when the install lacks a source file.

    The venv holds a strict editable install (a tree of links to the sources): a module or a
    static file added since the install is missing there (a 404, for a page) until `make` (or
    pip install -e again) refreshes it.
    """
    result = subprocess.run(
        [sys.executable, "-c", "import chatd; print(chatd.__file__)"],
        cwd=tmp_path_factory.mktemp("where"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"chatd is not installed in this venv:\n{result.stderr}"
    package = Path(result.stdout.strip()).parent
    sources = [*(ROOT / "chatd").glob("*.py"), *(ROOT / "chatd" / "static").iterdir()]
    missing = sorted(
        str(path.relative_to(ROOT / "chatd"))
        for path in sources
        if not (package / path.relative_to(ROOT / "chatd")).exists()
    )
    if missing:
        pytest.fail(
            f"the chatd installed in {sys.prefix} lacks {', '.join(missing)}: reinstall it"
            " (make test does; or pip install --config-settings editable_mode=strict -e .)",
            pytrace=False,
        )
    return package


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def client_ssl(ca) -> ssl.SSLContext:
    """Trusts only the test CA (no system CAs), and checks the host name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return context


@pytest.fixture(scope="session")
def websocket_ssl(ca) -> ssl.SSLContext:
    """client_ssl's trust for the `websockets` library's sync client, at most TLS 1.2.

    That client reads in a thread of its own while the caller writes, and Python's ssl module
    does not guard an SSL object used by two threads at once. Over TLS 1.3 the server's
    post-handshake messages arrive while the request is being written: about one wss handshake
    in 300-400 went unanswered, on the client's side (a raw client reading and writing in one
    thread: none in 2,400; the same client over TLS 1.2: none in 1,200). TLS 1.3 stays covered
    by the browser tests (Chromium), the security tests' own sockets and the bench's loadgen.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


@pytest.fixture(scope="session")
def server_cert(ca, tmp_path_factory) -> tuple[Path, Path]:
    """(certificate chain PEM, key PEM) for localhost and 127.0.0.1."""
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    directory = tmp_path_factory.mktemp("tls")
    chain, key = directory / "localhost.pem", directory / "localhost-key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return chain, key


@pytest.fixture
def make_daemon(
    request, tmp_path, server_cert, client_ssl, installed_chatd
) -> Iterator[Callable[..., Daemon]]:
    """Start a daemon; keyword arguments are INI sections ({key: value}) merged over the base."""
    daemons: list[Daemon] = []
    request.node.chatd_daemons = daemons

    def make(start: bool = True, twistd: Path = TWISTD, **overrides: dict[str, object]) -> Daemon:
        directory = tmp_path / f"chatd-{len(daemons) + 1}"
        directory.mkdir()
        transcripts = directory / "transcripts"
        certificate, key = server_cert
        sections: dict[str, dict[str, object]] = {
            "ws": {"interface": "127.0.0.1", "port": 0},
            "wss": {"interface": "127.0.0.1", "port": 0},
            "tls": {"certificate": certificate, "key": key},
            # Never rotate by date, so that a test running over midnight UTC sees one file.
            "transcripts": {"directory": transcripts, "rotate": "never"},
            "metrics": {"interface": "127.0.0.1", "port": 0},
            # The tests send fast on purpose; test_limits.py sets its own rates.
            "limits": {"messages_per_second": 100_000, "message_burst": 100_000},
        }
        for section, values in overrides.items():
            sections.setdefault(section, {}).update(values)
        config = write_ini(directory / "chatd.ini", sections)
        daemon = Daemon(directory, config, transcripts, client_ssl, twistd)
        enabled = ("yes", "True", "true", "1")
        if str(sections.get("api", {}).get("enabled", "no")) in enabled:
            daemon.listeners.add("api")
        metrics = sections["metrics"]
        if (
            str(metrics.get("enabled", "yes")) in enabled
            and metrics.get("serve_on", "local") == "local"
        ):
            # Tests read daemon.ports["metrics"]: wait for that listener too.
            daemon.listeners.add("metrics")
        daemons.append(daemon)
        return daemon.start() if start else daemon

    yield make
    for daemon in daemons:
        daemon.kill()


@pytest.fixture
def daemon(make_daemon) -> Daemon:
    return make_daemon()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    daemons = getattr(item, "chatd_daemons", None)
    if report.failed and daemons:
        for number, daemon in enumerate(daemons, 1):
            report.sections.append((f"chatd daemon {number} log", daemon.log))
    return report


@pytest.fixture
def clients(websocket_ssl) -> Iterator[Callable[..., Client]]:
    """`clients(url)` opens a Client; all are closed at teardown."""
    opened: list[Client] = []

    def open_client(url: str, name: str | None = None, **options) -> Client:
        client = Client(url, websocket_ssl, name, **options)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        with contextlib.suppress(Exception):
            client.close()


@pytest.fixture
def redis_server(tmp_path) -> Iterator:
    """A real redis-server for this test (tests/redis_harness.py)."""
    if not Path(REDIS_SERVER).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (Debian package redis-server)")
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.thaw()
        server.kill()
