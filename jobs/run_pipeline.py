"""spark-submit entry point: run the pipeline job. Usage: spark-submit.sh jobs/run_pipeline.py [--conf DIR] [--env NAME]"""

from __future__ import annotations

from lakecdp.entrypoints import pipeline_main

if __name__ == "__main__":
    raise SystemExit(pipeline_main())
