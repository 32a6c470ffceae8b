"""spark-submit entry point: run the segments step (lakecdp.steps) as its own recorded run.
Usage: spark-submit.sh jobs/run_segments.py [--conf DIR] [--env NAME]"""

from __future__ import annotations

from lakecdp.entrypoints import main

if __name__ == "__main__":
    raise SystemExit(main("segments"))
