"""spark-submit entry point: run the ingest job. Usage: spark-submit.sh jobs/run_ingest.py [--conf DIR] [--env NAME]"""

from __future__ import annotations

from lakecdp.entrypoints import ingest_main

if __name__ == "__main__":
    raise SystemExit(ingest_main())
