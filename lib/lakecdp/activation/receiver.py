"""A local webhook receiver for the demo: a stdlib HTTP server on 127.0.0.1 that appends
every request it gets (headers of interest + parsed body) as one JSON line to a file.

Example:
    >>> with LocalReceiver(Path("warehouse/demo_receiver/webhook.jsonl")) as receiver:
    ...     print(receiver.url)
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def _receive(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        record = {
            "path": self.path,
            "idempotency_key": self.headers.get("Idempotency-Key"),
            "content_type": self.headers.get("Content-Type"),
            "body": body,
        }
        with self.server.lock, self.server.output.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        answer = b'{"errors": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_POST = _receive
    do_PUT = _receive

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("receiver: " + format, *args)


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, output: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.output = output
        self.lock = threading.Lock()


class LocalReceiver:
    """Runs the receiver in a background thread for the duration of a ``with`` block."""

    def __init__(self, output: Path) -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        self.output = output
        self._server = _ReceiverServer(output)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> LocalReceiver:
        self._thread.start()
        logger.info("local webhook receiver on %s writing to %s", self.url, self.output)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
