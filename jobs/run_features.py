"""spark-submit entry point: run the features job. Usage: spark-submit.sh jobs/run_features.py [--conf DIR] [--env NAME]"""

from __future__ import annotations

from lakecdp.entrypoints import features_main

if __name__ == "__main__":
    raise SystemExit(features_main())
