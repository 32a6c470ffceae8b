"""Runs ``lakecdp serve`` as a real process on 127.0.0.1 for the API tests (not shipped)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

KEYS = {
    "website": "test-website-key-0123456789",
    "email_platform": "test-email-platform-key-9876543210",
    "slow": "test-slow-key-5555555555",
    "reader": "test-reader-key-1111111111",
    "shop": "test-shop-key-2222222222",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_conf(
    root: Path,
    *,
    as_of: str = "2026-11-01T00:00:00Z",
    max_body_bytes: int = 16384,
    max_batch_events: int = 50,
    engine: str = "spark",
) -> Path:
    """A copy of the repo's conf with a test environment (warehouse under ``root``, steps run by
    ``engine``) and test keys."""
    conf = root / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    (conf / "environments" / "apitest.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "name": "apitest",
                "engine": engine,
                "spark": {"mode": "local", "master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "2"}},
                "storage": {"warehouse": str(root / "warehouse")},
                "landing": str(root / "landing"),
                "checkpoints": str(root / "checkpoints"),
                "as_of": as_of,
            }
        )
    )
    digest = lambda k: hashlib.sha256(k.encode()).hexdigest()  # noqa: E731
    (conf / "api.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "log_dir": str(root / "intake"),
                "max_body_bytes": max_body_bytes,
                "max_batch_events": max_batch_events,
                "max_page_size": 1000,
                "keys": [
                    {"id": "website", "sha256": digest(KEYS["website"]), "sources": ["web_events"]},
                    {
                        "id": "email_platform",
                        "sha256": digest(KEYS["email_platform"]),
                        "sources": ["email_events"],
                        "destinations": ["demo_webhook"],
                    },
                    {
                        "id": "slow",
                        "sha256": digest(KEYS["slow"]),
                        "sources": ["web_events"],
                        "rate_per_second": 0.5,
                        "burst": 2,
                    },
                    {"id": "reader", "sha256": digest(KEYS["reader"]), "destinations": ["demo_export"]},
                    {"id": "shop", "sha256": digest(KEYS["shop"]), "sources": ["shop_orders"]},
                ],
            }
        )
    )
    return conf


class Service:
    """``python -m lakecdp --conf <conf> --env apitest serve --port <port>`` in its own process."""

    def __init__(self, conf: Path) -> None:
        self.conf = conf
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "lib")}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lakecdp",
                "--conf",
                str(self.conf),
                "--env",
                "apitest",
                "serve",
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited: {self.process.stderr.read().decode()[-3000:]}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("service did not answer /healthz within 60 s")

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def request(
        self,
        method: str,
        path: str,
        body: object | bytes | None = None,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], object]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, error.headers, json.loads(error.read() or b"null")


def write_three_customers(root: Path) -> None:
    """c1, c2, c3 (email ``<id>@x.io``) in profile, features and identifiers, written with delta-rs:
    the smallest world an event segment can be evaluated on."""
    from datetime import datetime, timezone

    import pyarrow as pa
    from deltalake import write_deltalake

    from lakecdp.delta_store import arrow_schema

    now = datetime.now(timezone.utc)
    customers = ("c1", "c2", "c3")
    tables = {
        "gold.customer_profile": (
            "customer_id string, first_name string, email string, run_id string",
            [{"customer_id": c, "run_id": "r0"} for c in customers],
        ),
        "gold.customer_features": (
            "customer_id string, as_of timestamp, total_spent double, last_activity_at timestamp, run_id string",
            [{"customer_id": c, "as_of": now, "run_id": "r0"} for c in customers],
        ),
        "identity.identifiers": (
            "identifier_type string, identifier_value string, customer_id string, run_id string",
            [
                {"identifier_type": "email", "identifier_value": f"{c}@x.io", "customer_id": c, "run_id": "r0"}
                for c in customers
            ],
        ),
    }
    for name, (schema, rows) in tables.items():
        table = pa.Table.from_pylist(rows, schema=arrow_schema(schema))
        write_deltalake(str(root / "warehouse" / name.replace(".", "/")), table, mode="append")
