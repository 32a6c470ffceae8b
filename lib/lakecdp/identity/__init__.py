"""Identity resolution: deterministic edges, Splink matching, clustering, stable ids, survivorship."""

from __future__ import annotations
