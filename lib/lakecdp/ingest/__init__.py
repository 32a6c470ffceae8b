"""Ingest: raw landing files (and Kafka messages) -> bronze, quarantine and silver Delta tables.

- :mod:`lakecdp.ingest.sources`: source configs (``conf/sources/*.yaml``).
- :mod:`lakecdp.ingest.validate`: ``parse_and_validate`` (pure transform, reason codes).
- :mod:`lakecdp.ingest.standardise`: cleaners and mappers to the unified silver schemas.
- :mod:`lakecdp.ingest.job`: the batch job (``run(ctx)``), exactly-once per file.
"""

from __future__ import annotations
