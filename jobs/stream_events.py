"""spark-submit entry point: stream web and email events from Kafka into Delta.

Usage:
    spark-submit.sh jobs/stream_events.py [--conf DIR] [--env NAME]
        [--trigger available_now|"10 seconds"] [--timeout SECONDS]

Topics, bootstrap servers and the default trigger come from ``conf/streaming.yaml``.
``--trigger available_now`` processes what is on the topics and exits (scheduled runs).
"""

from __future__ import annotations

import argparse
import logging
import sys

from lakecdp.context import setup_logging, start_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stream_events", description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="conf", help="config folder (default: ./conf)")
    parser.add_argument("--env", default=None, help="environment (default: $LAKECDP_ENV or local)")
    parser.add_argument("--trigger", default=None, help="override conf/streaming.yaml's trigger")
    parser.add_argument("--timeout", type=float, default=None, help="stop a continuous run after N s")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    setup_logging()
    from lakecdp.ingest.stream import run_streams

    ctx = start_job(args.conf, args.env, app_name="lakecdp-stream-events")
    counts = run_streams(ctx, trigger=args.trigger, timeout=args.timeout)
    logging.getLogger("stream_events").info("done: %s", counts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
