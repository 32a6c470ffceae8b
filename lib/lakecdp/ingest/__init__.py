"""Ingest: raw landing files (and Kafka messages) -> bronze, quarantine and silver Delta tables.

- :mod:`lakecdp.ingest.sources`: source configs (``conf/sources/*.yaml``).
- :mod:`lakecdp.ingest.validate`: ``parse_and_validate`` (pure transform, reason codes).
- :mod:`lakecdp.ingest.standardise`: cleaners and mappers to the unified silver schemas.
- :mod:`lakecdp.ingest.job`: the batch job (``run(ctx)``), exactly-once per file; its parts
  :mod:`~lakecdp.ingest.landing`, :mod:`~lakecdp.ingest.reading`, :mod:`~lakecdp.ingest.classify`,
  :mod:`~lakecdp.ingest.audit`.
- :mod:`lakecdp.ingest.rows`: bronze and quarantine rows, shared by the batch job and the stream.
- :mod:`lakecdp.ingest.stream`: the Kafka query (``run_available_now(ctx)``); its parts
  :mod:`~lakecdp.ingest.stream_config` (``conf/streaming.yaml``) and :mod:`~lakecdp.ingest.messages`.
"""

from __future__ import annotations
