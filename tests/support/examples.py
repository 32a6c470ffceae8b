"""How many examples a Hypothesis property test draws in this run.

The full suite (``make test-all``, what CI runs) draws each test's full count. ``make test``
sets ``LAKECDP_TEST_TIER=fast``: the developer tier draws a quarter of it (at least 50), so a
property is still tried on every commit and the full count still runs before a merge.
"""

from __future__ import annotations

import os

#: the share of a property test's examples the fast tier draws
FAST_SHARE = 4


def examples(full: int) -> int:
    """``full`` in the full suite, ``full // 4`` (at least 50) in ``make test``."""
    if os.environ.get("LAKECDP_TEST_TIER") == "fast":
        return max(full // FAST_SHARE, min(full, 50))
    return full
