"""The intake pickup on the embedded engine: :func:`lakecdp.ingest.embedded.write_chunk` (the rows
checked, mapped and written with delta-rs by the ingest's own embedded engine), re-exported for
:mod:`lakecdp.api.pickup`."""

from __future__ import annotations

from lakecdp.ingest.embedded import EmbeddedPickupUnsupported, map_rows, unsupported_reason, write_chunk

__all__ = ["EmbeddedPickupUnsupported", "map_rows", "unsupported_reason", "write_chunk"]
