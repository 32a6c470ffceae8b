"""spark-submit entry point: generate the sample data and run the whole pipeline.
Usage: spark-submit.sh jobs/run_demo.py [--conf DIR] [--env NAME] [--new-run]"""

from __future__ import annotations

from lakecdp.entrypoints import main

if __name__ == "__main__":
    raise SystemExit(main("demo"))
