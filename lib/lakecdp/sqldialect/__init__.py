"""Spark SQL as the one language of definitions, run on Spark or, translated, on DuckDB.

Segment conditions and queries (and, as they move onto the embedded engine, source mappings and
feature definitions) are written once in Spark SQL. :mod:`lakecdp.sqldialect.translate` reads such a
text with sqlglot and writes the DuckDB SQL that computes what Spark computes
(:mod:`lakecdp.sqldialect.spark_semantics` rewrites the functions whose meaning differs and refuses
those it cannot make equal). Both stand on the house: any room may use them.
"""

from __future__ import annotations

__all__ = ["SqlRefused"]


class SqlRefused(ValueError):
    """SQL that may not run (a segment, a source mapping, a feature definition); ``line``/``column`` are 1-based within the given text.

    ``line``/``column`` are None when the refused part has no position (a plan node Spark
    made up); ``segment`` is set once the refusal is tied to a segment definition.
    """

    def __init__(self, reason: str, *, line: int | None, column: int | None, segment: str | None = None) -> None:
        self.reason = reason
        self.line = line
        self.column = column
        self.segment = segment
        where = f"line {line}, column {column}: " if line is not None and column is not None else ""
        prefix = f"segment {segment}: " if segment else ""
        super().__init__(f"{prefix}{where}{reason}")

    def for_segment(self, segment: str) -> SqlRefused:
        """The same refusal, naming the segment it came from."""
        return SqlRefused(self.reason, line=self.line, column=self.column, segment=segment)
