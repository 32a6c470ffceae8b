"""Changes delivered per second to a local HTTP server: batched vs unbatched (baseline).

Run: ``.venv/bin/python -m bench.activation_webhook [--items 2000] [--batch 100]``.
No Spark: measures the delivery path (payload template, HTTP, response parsing) alone.
"""

from __future__ import annotations

import argparse
import time

from bench.results import append_results, machine, stamp
from lakecdp.activation.config import WebhookSettings
from tests.support.fault_server import FaultServer
from lakecdp.activation.webhook import WebhookClient


def _items(count: int) -> list[dict]:
    return [
        {
            "idempotency_key": f"k{n:08d}",
            "change_id": f"ch{n:08d}",
            "segment_id": "vip",
            "customer_id": f"c{n:08d}",
            "change_type": "entered",
            "email": f"person{n}@example.com",
            "first_name": "Ada",
        }
        for n in range(count)
    ]


def deliver_rate(items: list[dict], batch_size: int) -> tuple[float, int]:
    with FaultServer() as server:
        settings = WebhookSettings(
            url=server.url, batch_size=batch_size, timeout_seconds=10, allow_private_network=True
        )
        client = WebhookClient("bench", settings, run_id="bench")
        started = time.perf_counter()
        result = client.deliver(items)
        elapsed = time.perf_counter() - started
        assert len(result.delivered) == len(items) and len(server.processed) == len(items)
    return len(items) / elapsed, client.requests_sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--unbatched-items", type=int, default=300)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    machine_text, when = machine(), stamp()
    batched, batched_requests = deliver_rate(_items(args.items), args.batch)
    single, single_requests = deliver_rate(_items(args.unbatched_items), 1)
    table = "\n".join(
        [
            "| delivery | changes | requests | changes/s |",
            "|---|---|---|---|",
            f"| batched (batch_size={args.batch}) | {args.items:,} | {batched_requests:,} | {batched:,.0f} |",
            f"| baseline: unbatched (batch_size=1) | {args.unbatched_items:,} | {single_requests:,} | {single:,.0f} |",
            f"| speed-up | | | {batched / single:.1f}x |",
        ]
    )
    print(table)  # noqa: T201
    if not args.no_record:
        append_results(
            f"## Activation: webhook delivery throughput\n\nMeasured {when} on {machine_text}; stdlib "
            "`urllib` client against the real local `FaultServer` (no faults), payload template per change, "
            f"no Spark. Command: `python -m bench.activation_webhook --items {args.items}`.\n\n{table}"
        )


if __name__ == "__main__":
    main()
