"""Segment API: latency of a page of members on a 1M-member segment, over HTTP on 127.0.0.1.

Writes the tables directly with delta-rs (no Spark): ``segments.membership`` with ``--members``
current members of one segment, ``segments.runs``, ``gold.customer_profile`` (one row per
member) and ``activation.suppressions`` (1% of members suppressed by customer id), starts
``lakecdp serve`` as its own process and walks the segment page by page (``--limit`` rows)
following ``next_page_token``. The first request builds the per-version cache (reported
apart, as "cold"); the p50/p95 are over the warm pages.

    python -m bench.api_segments --members 1000000 --pages 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench.results import append_results, machine, stamp  # noqa: E402


def build(root: Path, members: int) -> int:
    from deltalake import write_deltalake

    from api_server import write_conf  # noqa: F401  (same helper the tests use)

    ts = pa.timestamp("us", tz="UTC")
    now = datetime(2026, 11, 1, tzinfo=timezone.utc)
    ids = pa.array([f"C{n:08d}" for n in range(members)])
    warehouse = root / "warehouse"
    write_deltalake(
        str(warehouse / "segments" / "membership"),
        pa.table(
            {
                "segment_id": pa.array(["vip"] * members),
                "customer_id": ids,
                "member_key": pa.array([""] * members),
                "entered_at": pa.array([now] * members, ts),
                "exited_at": pa.nulls(members, ts),
                "entered_run_id": pa.array(["R1"] * members),
                "exited_run_id": pa.nulls(members, pa.string()),
                "reason": pa.array(["{}"] * members),
                "is_current": pa.array([True] * members),
            }
        ),
    )
    write_deltalake(
        str(warehouse / "segments" / "runs"),
        pa.table(
            {
                "run_id": ["R1"],
                "mode": ["batch"],
                "as_of": pa.array([now], ts),
                "segments": [["vip"]],
                "changes": pa.array([members], pa.int64()),
                "membership_version": pa.array([0], pa.int64()),
                "applied_at": pa.array([now], ts),
            }
        ),
    )
    emails = pa.array([f"person{n}@example.com" for n in range(members)])
    write_deltalake(
        str(warehouse / "gold" / "customer_profile"),
        pa.table(
            {
                "customer_id": ids,
                "email": emails,
                "first_name": pa.array(["Ada"] * members),
                "last_name": pa.array(["Lovelace"] * members),
                "emails": pa.array([[e] for e in emails.to_pylist()], pa.list_(pa.string())),
                "phones": pa.array([[] for _ in range(members)], pa.list_(pa.string())),
            }
        ),
    )
    suppressed = ids.to_pylist()[::100]
    write_deltalake(
        str(warehouse / "activation" / "suppressions"),
        pa.table(
            {
                "customer_id": suppressed,
                "reason": ["unsubscribed"] * len(suppressed),
                "identifier_type": pa.nulls(len(suppressed), pa.string()),
                "identifier_value": pa.nulls(len(suppressed), pa.string()),
                "since": pa.array([now] * len(suppressed), ts),
                "run_id": ["A1"] * len(suppressed),
            }
        ),
    )
    return members - len(suppressed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    from api_server import KEYS, Service, write_conf

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lakecdp-api-bench-") as folder:
        root = Path(folder)
        expected = build(root, args.members)
        print(f"tables written in {time.monotonic() - started:.1f} s ({expected:,} unsuppressed members)")
        service = Service(write_conf(root)).start()
        try:
            path = f"/v1/segments/vip/members?limit={args.limit}"
            clock = time.perf_counter()
            status, _, page = service.request("GET", path, key=KEYS["reader"])
            cold = time.perf_counter() - clock
            assert status == 200 and page["total"] == expected, page
            timings, seen = [], len(page["members"])
            for _ in range(args.pages):
                token = page["next_page_token"]
                if token is None:
                    break
                clock = time.perf_counter()
                status, _, page = service.request("GET", f"{path}&page_token={token}", key=KEYS["reader"])
                timings.append(time.perf_counter() - clock)
                assert status == 200 and len(page["members"]) == args.limit or page["next_page_token"] is None
                seen += len(page["members"])
        finally:
            service.stop()
    timings.sort()
    p50 = statistics.median(timings) * 1000
    p95 = timings[int(0.95 * (len(timings) - 1))] * 1000
    print(f"cold first page {cold * 1000:.0f} ms; warm pages: {len(timings)}, p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    if not args.no_record:
        append_results(
            f"## Segment API: a page of {args.limit:,} members on a {args.members:,}-member segment\n\n"
            f"Measured {stamp()} on {machine()}; `lakecdp serve` (uvicorn, one process) on 127.0.0.1, tables "
            f"written with delta-rs, 1% of members suppressed, pages walked with `next_page_token` over HTTP "
            f"(urllib, one connection per request). Command: `python -m bench.api_segments --members "
            f"{args.members} --pages {args.pages}`.\n\n"
            "| request | pages | p50 | p95 |\n|---|---|---|---|\n"
            f"| first page (cold: reads the Delta version, builds the sorted, suppressed member list) | 1 | "
            f"{cold * 1000:.0f} ms | |\n"
            f"| next pages (warm) | {len(timings)} | {p50:.1f} ms | {p95:.1f} ms |\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
