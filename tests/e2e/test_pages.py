"""The browser client's files as a browser gets them from a real daemon."""

from __future__ import annotations

import urllib.request

import pytest
from chatd_harness import RECV_TIMEOUT


@pytest.mark.parametrize("path", ["/", "/support", "/agent", "/app.js", "/style.css"])
def test_the_browser_client_is_served_with_protective_headers(daemon, path):
    with urllib.request.urlopen(daemon.http_url("ws", path), timeout=RECV_TIMEOUT) as response:
        assert response.status == 200 and response.read()
        headers = response.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-cache"


def test_unknown_paths_are_404_and_no_directory_is_listed(daemon):
    for path in ("/nothing-here", "/../etc/passwd", "/static/"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(daemon.http_url("ws", path), timeout=RECV_TIMEOUT)
        assert refused.value.code == 404, path


def test_a_nul_in_the_path_is_404_and_logs_no_traceback(daemon):
    for path in ("/%00", "/app.js%00", "/%ff"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(daemon.http_url("ws", path), timeout=RECV_TIMEOUT)
        assert refused.value.code == 404, path
    daemon.stop()
    log = daemon.log_of_last_start
    assert '"GET /%00 HTTP/1.1" 404' in log
    assert "Traceback" not in log and "#critical" not in log and "#error" not in log, log
