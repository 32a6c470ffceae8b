"""spark-submit entry point: run the identity job. Usage: spark-submit.sh jobs/run_identity.py [--conf DIR] [--env NAME]"""

from __future__ import annotations

from lakecdp.entrypoints import identity_main

if __name__ == "__main__":
    raise SystemExit(identity_main())
