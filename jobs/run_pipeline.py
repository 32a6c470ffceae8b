"""spark-submit entry point: run the pipeline (every step of lakecdp.steps in order; resumes an
unfinished run). Usage: spark-submit.sh jobs/run_pipeline.py [--conf DIR] [--env NAME] [--new-run]"""

from __future__ import annotations

from lakecdp.entrypoints import main

if __name__ == "__main__":
    raise SystemExit(main("pipeline"))
