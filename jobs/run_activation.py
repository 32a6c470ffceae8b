"""spark-submit entry point: run the activation job. Usage: spark-submit.sh jobs/run_activation.py [--conf DIR] [--env NAME]"""

from __future__ import annotations

from lakecdp.entrypoints import activation_main

if __name__ == "__main__":
    raise SystemExit(activation_main())
