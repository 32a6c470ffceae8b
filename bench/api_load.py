"""Intake load: events/s accepted by one ``lakecdp serve`` process, request latency, and
every accepted event in silver.events exactly once after the pickup.

Bounded and local: the service runs on 127.0.0.1, ``--threads`` clients each keep one HTTP/1.1
connection and post ``/v1/batch`` requests of ``--batch`` web events, paced so that together
they offer ``--rate`` events/s for ``--seconds``. Every event id is unique; the client keeps the
ids of events answered 202. Then (``--pickup``) ``api-pickup`` runs on local Spark and the ids in
``silver.events`` are compared with the accepted ones (count and set).

    python -m bench.api_load --rate 5000 --seconds 60 --batch 100 --pickup
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench.results import append_results, machine, stamp  # noqa: E402


def client(
    port: int,
    key: str,
    *,
    worker: int,
    batches: int,
    batch: int,
    interval: float,
    start: float,
    latencies: list[float],
    accepted: list[str],
    errors: list[str],
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    for n in range(batches):
        due = start + n * interval
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        ids = [f"w-load-{worker}-{n}-{i}" for i in range(batch)]
        body = json.dumps(
            {
                "source": "web_events",
                "events": [
                    {
                        "event_id": event_id,
                        "event_type": "page_view",
                        "ts": "2026-10-31T12:00:00Z",
                        "anonymous_id": f"d-{worker}-{i}",
                        "session_id": f"s-{worker}",
                        "page_url": "https://shop.example/p/1",
                    }
                    for i, event_id in enumerate(ids)
                ],
            }
        )
        clock = time.perf_counter()
        connection.request("POST", "/v1/batch", body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        latencies.append(time.perf_counter() - clock)
        if response.status == 202:
            accepted.extend(ids)
        else:
            errors.append(f"{response.status} {payload[:200]!r}")
    connection.close()


def offer(port: int, key: str, args: argparse.Namespace) -> tuple[list[float], list[str], list[str], float]:
    """Offer ``args.rate`` events/s for ``args.seconds`` to 127.0.0.1:``port``; (latencies, accepted ids,
    errors, elapsed seconds)."""
    requests_per_thread = args.rate * args.seconds // args.batch // args.threads
    interval = args.batch * args.threads / args.rate
    latencies: list[float] = []
    accepted: list[str] = []
    errors: list[str] = []
    start = time.perf_counter() + 0.5
    threads = [
        threading.Thread(
            target=client,
            args=(port, key),
            kwargs=dict(
                worker=w,
                batches=requests_per_thread,
                batch=args.batch,
                interval=interval,
                start=start + w * interval / args.threads,
                latencies=latencies,
                accepted=accepted,
                errors=errors,
            ),
        )
        for w in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return latencies, accepted, errors, time.perf_counter() - start


def _server_kind() -> str:
    """What uvicorn's "auto" picks here: httptools / h11 and uvloop / asyncio."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{http} + {loop}"


def _pct(latencies: list[float], q: float) -> float:
    return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000


def baseline(args: argparse.Namespace) -> tuple[list[float], list[str], list[str], float]:
    """The same client against bench.api_bare (202 and nothing else) in its own process."""
    import os
    import subprocess
    import urllib.request

    from api_server import free_port

    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen([sys.executable, "-m", "bench.api_bare", "--port", str(port)], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/batch", data=b"{}", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return offer(port, "none", args)
    finally:
        process.terminate()
        process.wait(timeout=30)


def disk_probe(folder: Path, *, writes: int, size: int) -> list[float]:
    """``writes`` appends of ``size`` bytes, each followed by fdatasync, in ``folder`` (the log's disk):
    the floor under every intake answer, which waits for one."""
    import os

    sync = getattr(os, "fdatasync", os.fsync)
    latencies = []
    with open(folder / "probe.log", "ab") as handle:
        block = b"x" * (size - 1) + b"\n"
        for _ in range(writes):
            clock = time.perf_counter()
            handle.write(block)
            handle.flush()
            sync(handle.fileno())
            latencies.append(time.perf_counter() - clock)
    (folder / "probe.log").unlink()
    return sorted(latencies)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5000, help="events/s offered")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pickup", action="store_true", help="then load into silver and compare ids")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare-endpoint baseline")
    args = parser.parse_args(argv)
    from api_server import KEYS, Service, write_conf

    load_before = os.getloadavg()
    bare = None
    if not args.no_baseline:
        b_lat, b_acc, b_err, b_elapsed = baseline(args)
        bare = (
            f"| bare Starlette 202 (baseline) | {len(b_lat) * args.batch / b_elapsed:,.0f} | {len(b_lat):,} | "
            f"{_pct(b_lat, 0.5):.1f} ms | {_pct(b_lat, 0.99):.1f} ms | {b_lat[-1] * 1000:.0f} ms | {len(b_err)} |"
        )
        print(
            f"baseline: requests {len(b_lat):,}: p50 {_pct(b_lat, 0.5):.1f} ms, p99 {_pct(b_lat, 0.99):.1f} ms, "
            f"max {b_lat[-1] * 1000:.0f} ms; errors {len(b_err)}"
        )

    with tempfile.TemporaryDirectory(prefix="lakecdp-api-load-") as folder:
        root = Path(folder)
        conf = write_conf(root, max_body_bytes=4 << 20, max_batch_events=1000)
        # the website key allows 200 requests/s (burst 400): above the offered --rate / --batch
        probe = disk_probe(root, writes=1000, size=20_000)
        disk = (
            f"| write + fdatasync of 20 KB, alone ({len(probe):,} in a row, the log's disk) | | {len(probe):,} | "
            f"{_pct(probe, 0.5):.1f} ms | {_pct(probe, 0.99):.1f} ms | {probe[-1] * 1000:.0f} ms | |"
        )
        print(f"disk: write+fdatasync p50 {_pct(probe, 0.5):.1f} ms, p99 {_pct(probe, 0.99):.1f} ms")
        service = Service(conf).start()
        latencies, accepted, errors, elapsed = offer(service.port, KEYS["website"], args)
        service.stop()
        load_after = os.getloadavg()
        pct = lambda q: _pct(latencies, q)  # noqa: E731
        rate = len(accepted) / elapsed
        print(
            f"{len(accepted):,} events accepted in {elapsed:.1f} s = {rate:,.0f} events/s; "
            f"requests {len(latencies):,}: p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, max {latencies[-1] * 1000:.0f} ms; "
            f"errors {len(errors)} {errors[:3]}"
        )
        silver = ""
        if args.pickup:
            from deltalake import DeltaTable

            from lakecdp.api.pickup import pickup
            from lakecdp.config import load_project
            from lakecdp.context import JobContext
            from lakecdp.spark import get_session

            project = load_project(conf, env="apitest")
            spark = get_session(project, app_name="lakecdp-api-load")
            clock = time.perf_counter()
            counts = pickup(JobContext.create(project, spark), root / "intake")
            took = time.perf_counter() - clock
            ids = (
                DeltaTable(str(root / "warehouse" / "silver" / "events"))
                .to_pyarrow_table(columns=["event_id"])
                .column("event_id")
                .to_pylist()
            )
            same = sorted(ids) == sorted(accepted)
            silver = (
                f"pickup {took:.0f} s ({counts}); silver.events rows {len(ids):,}, distinct "
                f"{len(set(ids)):,}, id set equal to the accepted ids: {same}"
            )
            print(silver)
            spark.stop()
    if not args.no_record:
        append_results(
            f"## Intake load: {args.rate:,} events/s offered for {args.seconds} s\n\n"
            f"Measured {stamp()} on {machine()} (a box shared with other engineers' test runs; 1-minute load "
            f"average {load_before[0]:.1f} before, {load_after[0]:.1f} after the service run); "
            f"one `lakecdp serve` process (uvicorn, {_server_kind()}) on 127.0.0.1, "
            f"{args.threads} client threads in the bench process (one keep-alive connection each) posting "
            f"`/v1/batch` of {args.batch} web events, fsync'd group commits. Command: `python -m bench.api_load "
            f"--rate {args.rate} --seconds {args.seconds} --batch {args.batch}{' --pickup' if args.pickup else ''}`.\n\n"
            "The baseline row is the same client, same run, against `bench/api_bare.py` (uvicorn + a Starlette "
            "endpoint that reads the body and answers 202): what the box gives any HTTP service at that moment; "
            "the disk row is the log's own floor (every 2xx waits for one such sync, shared by a group).\n\n"
            "| service | events/s | requests | p50 | p99 | max | errors |\n|---|---|---|---|---|---|---|\n"
            + (f"{bare}\n" if bare else "")
            + f"{disk}\n"
            + f"| lakecdp serve ({len(accepted):,} events accepted) | {rate:,.0f} | {len(latencies):,} | {pct(0.5):.1f} ms | {pct(0.99):.1f} ms | "
            f"{latencies[-1] * 1000:.0f} ms | {len(errors)} |\n" + (f"\n{silver}\n" if silver else "")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
