"""Source format ``logfmt``: one row per line of ``key=value`` pairs separated by spaces
(no quoting), as application logs write them:

    id=a1 kind=purchase at=2026-10-30T10:00:00Z amount=12.5

A test plugin: a line that repeats a key fails the read (Spark's map key policy); a real
format would quarantine it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from lakecdp.ingest.formats import SOURCE_FORMATS, Parsed, SourceFormat

if TYPE_CHECKING:
    from pyspark.sql import Column

    from lakecdp.ingest.sources import SourceConfig


class LogfmtFormat(SourceFormat):
    name: ClassVar[str] = "logfmt"
    nested_columns: ClassVar[bool] = False

    # read: the default (one row per non-blank line, counted by the audit)

    def parse(self, raw: Column, source: SourceConfig, header: list[str] | None) -> Parsed:
        from pyspark.sql import functions as F

        # a line is a JSON object once split into pairs: the JSON parser does the rest
        as_json = F.to_json(F.str_to_map(raw, F.lit(" "), F.lit("=")))
        return SOURCE_FORMATS["jsonl"].parse(as_json, source, header)
