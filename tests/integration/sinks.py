"""Real local alert sinks for tests: an HTTP server that keeps every webhook POST."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


@contextmanager
def webhook_server() -> Iterator[tuple[str, list[dict]]]:
    """(URL, received): every POST body to the URL lands, parsed as JSON, in `received`."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    # A short poll interval: shutdown() waits for one poll (0.5 s by default, at every test's teardown).
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/flywheel", received
    finally:
        server.shutdown()
        server.server_close()
