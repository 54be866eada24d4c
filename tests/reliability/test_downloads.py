"""A download has an overall deadline: a server that drips bytes slowly cannot hold a search forever."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nas_integration.download import download


class _Drip(BaseHTTPRequestHandler):
    """Announces 10 MB, then sends one byte every 20 ms (each read returns well within any socket timeout)."""

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        self.send_response(200)
        self.send_header("Content-Length", str(10**7))
        self.end_headers()
        try:
            for _ in range(1000):  # 20 s at most, so the server thread always ends
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.02)
        except OSError:
            pass  # the client gave up

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def drip_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_slow_drip_server_is_given_up_at_the_deadline(drip_url: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError, match=r"within the 1 s deadline .*download deadline") as info:
        download("mnist", tmp_path / "mnist", mirror=drip_url, timeout=5.0, deadline=1.0)
    elapsed = time.monotonic() - t0
    assert elapsed < 4, f"the download ran {elapsed:.1f} s past a 1 s deadline"
    assert "train-images-idx3-ubyte.gz" in str(info.value) and str(tmp_path / "mnist") in str(info.value)
    assert not list((tmp_path / "mnist").iterdir()), "a partial file was left behind"
