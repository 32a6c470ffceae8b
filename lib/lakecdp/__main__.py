from __future__ import annotations

from lakecdp.cli import main

raise SystemExit(main())
