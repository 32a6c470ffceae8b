"""Test and benchmark support (not shipped in the wheel): a real HTTP server on 127.0.0.1
(random port) that injects faults and records what it got.

Faults are scripted per request, in order (``script``): ``ok``, ``503``, ``429:<seconds>``,
``slow:<seconds>`` (answers 200 after the client has given up), ``reset`` (closes the
connection with RST, no response). After the script runs out every request is ``ok``.
Rows are rejected by content: an item whose ``customer_id`` is in ``reject_rows`` is named in a
200 response's ``errors``; one in ``poison_rows`` makes the whole request a 400.

``processed`` counts how many times the server accepted each item's ``idempotency_key`` (a
well-behaved receiver would drop the repeats); ``received`` keeps every request as it arrived.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script=(), *, reject_rows=(), poison_rows=()):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = list(script)
        self.reject_rows = set(reject_rows)
        self.poison_rows = set(poison_rows)
        self.lock = threading.Lock()
        self.received: list[dict] = []  # every request: headers + items + what the server did
        self.processed: Counter[str] = Counter()  # idempotency_key -> times accepted
        self.accepted_items: dict[str, dict] = {}
        self.request_times: list[float] = []
        self._in_flight = 0
        self._idle = threading.Condition(self.lock)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.wait_idle()
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address):
        # resets and client-side timeouts break the socket on purpose; nothing to report
        pass

    def process_request_thread(self, request, client_address):
        with self.lock:
            self._in_flight += 1
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.lock:
                self._in_flight -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no request is being handled (a slow answer the client gave up on)."""
        with self.lock:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    def keys_received(self) -> list[str]:
        return [item["idempotency_key"] for request in self.received for item in request["items"]]


class _Handler(BaseHTTPRequestHandler):
    server: FaultServer

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def _answer(self, code: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        payload = json.loads(self.rfile.read(length))
        items = payload["items"]
        server = self.server
        with server.lock:
            action = server.script.pop(0) if server.script else "ok"
            server.request_times.append(time.monotonic())
            server.received.append(
                {
                    "action": action,
                    "idempotency_key": self.headers.get("Idempotency-Key"),
                    "authorization": self.headers.get("Authorization"),
                    "items": items,
                }
            )
        if action == "503":
            return self._answer(503, {"error": "unavailable"})
        if action.startswith("429:"):
            return self._answer(429, {"error": "slow down"}, {"Retry-After": action.split(":")[1]})
        if action == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return None
        if action.startswith("slow:"):
            time.sleep(float(action.split(":")[1]))
        if any(item["customer_id"] in server.poison_rows for item in items):
            return self._answer(400, {"error": "invalid request"})
        errors = [
            {"index": index, "reason": "invalid email"}
            for index, item in enumerate(items)
            if item["customer_id"] in server.reject_rows
        ]
        with server.lock:
            rejected = {e["index"] for e in errors}
            for index, item in enumerate(items):
                if index not in rejected:
                    server.processed[item["idempotency_key"]] += 1
                    server.accepted_items[item["idempotency_key"]] = item
        try:
            return self._answer(200, {"errors": errors})
        except OSError:
            return None  # the client gave up waiting (slow response)
