"""spark-submit entry point: run the segments job. Usage: spark-submit.sh jobs/run_segments.py [--conf DIR] [--env NAME]"""

from __future__ import annotations

from lakecdp.entrypoints import segments_main

if __name__ == "__main__":
    raise SystemExit(segments_main())
