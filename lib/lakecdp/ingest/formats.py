"""Source file formats, chosen by ``format:`` in ``conf/sources/<name>.yaml``.

A format says how a landed file becomes rows (``raw`` text + ``source_file`` + ``line``) and
how ``raw`` becomes the source's columns as read (the shared validator types and checks them
afterwards), whether its lines are counted (the audit then checks every non-blank line was
read), whether columns may be nested, and what one of its rows looks like as a Kafka message.
A new format is one module with a :class:`SourceFormat` plus one line in :data:`SOURCE_FORMATS`
(docs/extending.md#adding-a-source-format).

Example:
    >>> SOURCE_FORMATS["parquet"].text
    False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from lakecdp.context import JobContext
    from lakecdp.ingest.landing import LandedFile
    from lakecdp.ingest.sources import SourceConfig

#: what :meth:`SourceFormat.parse` returns: the columns as read (a struct: text for scalars),
#: structural findings, their detail and the rescued unknown columns (JSON or null); see
#: :func:`lakecdp.ingest.validate.parse_and_validate`
Parsed = tuple["Column", list["Column"], "Column", "Column"]


@dataclass(frozen=True)
class FileRows:
    """One file's rows before parsing."""

    #: ``raw, source_file, line`` (line 1 = the file's first line or row)
    rows: DataFrame
    #: the column names a header line gives, or None
    header: list[str] | None = None
    #: what is wrong with the header (every row is then quarantined DUPLICATE_HEADER), or None
    header_problem: str | None = None


class SourceFormat:
    """How one file format is read and parsed. Stateless: one instance serves every source."""

    name: ClassVar[str]
    #: a text file: its non-blank lines are counted from the bytes and must all be read
    text: ClassVar[bool] = True
    #: columns may declare nested types (struct / array / map)
    nested_columns: ClassVar[bool] = True

    def has_header(self, source: SourceConfig) -> bool:
        """The file's first line names the columns (it is not a row)."""
        return False

    def read(self, ctx: JobContext, file: LandedFile, source: SourceConfig) -> FileRows:
        """The file's rows; by default its non-blank physical lines, one row each."""
        from lakecdp.ingest.reading import read_lines

        return FileRows(read_lines(ctx, file, skip_header=False))

    def parse(self, raw: Column, source: SourceConfig, header: list[str] | None) -> Parsed:
        """``raw`` -> the columns as read (see :data:`Parsed`)."""
        raise NotImplementedError

    def as_message(self, source: SourceConfig) -> SourceConfig:
        """The source as it arrives on Kafka: one JSON object per message.

        Raises:
            ValueError: why this source's rows cannot arrive as JSON messages.
        """
        raise ValueError(f"{self.name} rows have no JSON message form")


class JsonLinesFormat(SourceFormat):
    """``jsonl``: one JSON object per line; nested columns allowed."""

    name: ClassVar[str] = "jsonl"

    def parse(self, raw: Column, source: SourceConfig, header: list[str] | None) -> Parsed:
        from lakecdp.ingest.validate import _as_read_json

        return _as_read_json(raw, source)

    def as_message(self, source: SourceConfig) -> SourceConfig:
        return source


class CsvFormat(SourceFormat):
    """``csv``: ``options`` sep / quote / escape / header; scalar columns only."""

    name: ClassVar[str] = "csv"
    nested_columns: ClassVar[bool] = False

    def has_header(self, source: SourceConfig) -> bool:
        return source.options.get("header", "true").lower() == "true"

    def read(self, ctx: JobContext, file: LandedFile, source: SourceConfig) -> FileRows:
        from lakecdp.ingest.reading import check_columns, csv_header, read_lines, repeated_columns

        header = csv_header(file, source) if self.has_header(source) else None
        problem = None
        if header is not None:
            problem = repeated_columns(header)
            if problem is None:
                check_columns(file, source, header)
            else:
                header = [f"_repeated_{i}" if name in header[:i] else name for i, name in enumerate(header)]
        return FileRows(read_lines(ctx, file, skip_header=header is not None), header, problem)

    def parse(self, raw: Column, source: SourceConfig, header: list[str] | None) -> Parsed:
        from lakecdp.ingest.validate import _as_read_csv

        return _as_read_csv(raw, source, header or source.column_names)

    def as_message(self, source: SourceConfig) -> SourceConfig:
        # email events land as CSV files; on Kafka they are JSON objects with the same fields
        return source.model_copy(update={"format": "jsonl", "options": {}})


class ParquetFormat(SourceFormat):
    """``parquet``: rows become JSON text (``raw``); ``line`` is the row's index in the file;
    the file's columns are its header (:meth:`parse`: the keys the rows can have)."""

    name: ClassVar[str] = "parquet"
    text: ClassVar[bool] = False

    def read(self, ctx: JobContext, file: LandedFile, source: SourceConfig) -> FileRows:
        from lakecdp.ingest.reading import read_parquet_rows

        rows, columns = read_parquet_rows(ctx, file, source)
        # the file's columns: the only keys its rows' JSON can have
        return FileRows(rows, columns)

    def parse(self, raw: Column, source: SourceConfig, header: list[str] | None) -> Parsed:
        from lakecdp.ingest.validate import _as_read_json

        return _as_read_json(raw, source, header)


#: ``format:`` -> the format
SOURCE_FORMATS: dict[str, SourceFormat] = {f.name: f for f in (CsvFormat(), JsonLinesFormat(), ParquetFormat())}


def register_source_format(source_format: SourceFormat) -> SourceFormat:
    """Add a format from outside this package (a plugin).

    Raises:
        ValueError: another format already has the name.
    """
    known = SOURCE_FORMATS.get(source_format.name)
    if known is not None and known is not source_format:
        raise ValueError(f"source format {source_format.name!r} is taken by {type(known).__name__}")
    SOURCE_FORMATS[source_format.name] = source_format
    return source_format
