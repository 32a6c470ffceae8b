"""``generate``: the sample world's raw sources and labels for one increment, computed in Spark.

Spark runs the per-person functions of :mod:`lakecdp.sample.sources` over ``spark.range`` (one
pass, persisted); each source is then sorted by its key and streamed in order into one local
file (``toLocalIterator``; Parquet through ``pyarrow.parquet.ParquetWriter``), never through
``coalesce(1)``. Each file is written to a temporary name and renamed, so a file that exists is
complete.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
import threading
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import groupby
from operator import itemgetter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakecdp.sample import sources
from lakecdp.sample.config import SampleConfig
from lakecdp.sample.sources import FILES, Spec
from lakecdp.sample.world import make_person

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

# bump when the generator's output changes for the same inputs (the demo's skip check uses it)
GENERATOR_VERSION = 3
_ROW_FUNCTIONS = {
    "crm": sources.crm_rows,
    "shop_customers": sources.shop_customer_rows,
    "shop_orders": sources.order_rows,
    "web_events": sources.web_rows,
    "email_events": sources.email_rows,
    "third_party": sources.third_party_rows,
    "people": sources.people_rows,
}
_HEADERS = {"crm": sources.CRM_HEADER, "email_events": sources.EMAIL_HEADER}
_META = ("sort_key", "defect", "expected", "record_key", "source_record_id", "person_id", "household_id")
_ARROW_SCHEMA = pa.schema(
    [("source", pa.string()), ("sort_key", pa.string()), ("line", pa.binary())]
    + [(name, pa.string()) for name in _META[1:]]
)
_SPARK_SCHEMA = (
    "source string, sort_key string, line binary, defect string, expected string, record_key string, "
    "source_record_id string, person_id string, household_id string"
)
# people per Spark partition of the generating pass
_PEOPLE_PER_PARTITION = 2_500


def _rows_of_people(spec: Spec, functions: dict[str, Any]):
    """The function Spark runs per partition: person ids in, every (wanted) source's rows out."""

    def generate_rows(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows: list[dict[str, Any]] = []
            for index in batch.column(0).to_pylist():
                person = make_person(spec.seed, index, spec.config, initial=spec.initial)
                for source, function in functions.items():
                    for row in function(spec, person):
                        if source == "third_party":
                            fields = {name: row.pop(name) for name in sources.THIRD_PARTY_COLUMNS}
                            row["line"] = json.dumps(fields).encode("utf-8")
                        row["source"] = source
                        rows.append(row)
                if len(rows) >= 20_000:
                    yield pa.RecordBatch.from_pylist(rows, schema=_ARROW_SCHEMA)
                    rows = []
            if rows:
                yield pa.RecordBatch.from_pylist(rows, schema=_ARROW_SCHEMA)

    return generate_rows


def _functions(only: Collection[str] | None) -> dict[str, Any]:
    return {name: f for name, f in _ROW_FUNCTIONS.items() if only is None or name in only or name == "people"}


def world_rows(spark: SparkSession, spec: Spec, only: Collection[str] | None = None) -> DataFrame:
    """Every row of every source (or ``only`` those) for ``spec``, unsorted: one Spark pass over the people."""
    partitions = max(2, -(-spec.population // _PEOPLE_PER_PARTITION))
    return spark.range(0, spec.population, numPartitions=partitions).mapInArrow(
        _rows_of_people(spec, _functions(only)), _SPARK_SCHEMA
    )


def _rows_of_range(spec: Spec, only: Collection[str] | None, start: int, stop: int) -> pa.Table:
    """Every row of the people ``start`` .. ``stop - 1`` (one part of :func:`_sorted_rows_in_process`)."""
    people = pa.record_batch([pa.array(range(start, stop), pa.int64())], names=["id"])
    return pa.Table.from_batches(list(_rows_of_people(spec, _functions(only))([people])), schema=_ARROW_SCHEMA)


def _sorted_rows_in_process(spec: Spec, only: Collection[str] | None) -> Iterator[dict[str, Any]]:
    """The rows :func:`world_rows` gives, in the order the Spark path writes them, generated without
    a JVM: the same row functions over the same person ids, in parts of ``_PEOPLE_PER_PARTITION``
    people on one process per core, sorted by ``(source, sort_key)`` as Spark's ``orderBy`` sorts
    strings (by their UTF-8 bytes)."""
    bounds = [
        (start, min(start + _PEOPLE_PER_PARTITION, spec.population))
        for start in range(0, spec.population, _PEOPLE_PER_PARTITION)
    ]
    workers = min(len(bounds), os.cpu_count() or 1)
    # forked children (spawn would re-run the caller's __main__: a notebook, `python -c`, stdin);
    # only from a single-threaded process, where a fork cannot copy a lock another thread holds
    # (`lakecdp demo` starts here; a process with a JVM gateway or a server generates serially)
    if workers > 1 and threading.active_count() == 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            parts = list(pool.map(_rows_of_range, *zip(*[(spec, only, a, b) for a, b in bounds])))
    else:
        parts = [_rows_of_range(spec, only, a, b) for a, b in bounds]
    table = pa.concat_tables(parts)
    keys = pa.table({"source": table["source"].cast(pa.binary()), "sort_key": table["sort_key"].cast(pa.binary())})
    order = pc.sort_indices(keys, sort_keys=[("source", "ascending"), ("sort_key", "ascending")])
    for batch in table.take(order).to_batches(max_chunksize=10_000):
        yield from batch.to_pylist()


class _Labels:
    """Ground truth collected while the files are written."""

    def __init__(self) -> None:
        self.planted: list[tuple[str, str, int, str, str, str]] = []
        self.entities: set[tuple[str, str, str, str]] = set()

    def add(self, source: str, file: str, line: int, row: Any) -> None:
        if row["defect"]:
            self.planted.append((source, file, line, row["record_key"] or "", row["defect"], row["expected"]))
        if row["source_record_id"] and row["expected"] != "quarantine":
            self.entities.add((source, row["source_record_id"], row["person_id"], row["household_id"]))


def _replace(temporary: Path, final: Path) -> None:
    os.replace(temporary, final)


def _write_lines(
    rows: Iterator[Any], path: Path, header: tuple[str, ...] | None, source: str, relative: str, labels: _Labels
) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    count = 0
    with open(temporary, "wb") as out:
        line_number = 0
        if header is not None:
            out.write((sources.csv_line(header) + "\n").encode("utf-8"))
            line_number = 1
        for row in rows:
            out.write(bytes(row["line"]) + b"\n")
            line_number += 1
            count += 1
            labels.add(source, relative, line_number, row)
    _replace(temporary, path)
    return count


def _write_parquet(rows: Iterator[Any], path: Path, relative: str, labels: _Labels) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    schema = pa.schema([(name, pa.string()) for name in sources.THIRD_PARTY_COLUMNS])
    count = 0
    batch: list[dict[str, Any]] = []
    with pq.ParquetWriter(temporary, schema) as writer:
        for row in rows:
            batch.append(json.loads(bytes(row["line"])))
            count += 1
            labels.add("third_party", relative, count, row)
            if len(batch) >= 10_000:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        # an empty increment still writes a valid file with the schema
        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    _replace(temporary, path)
    return count


def _write_csv(path: Path, header: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    count = 0
    with open(temporary, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    _replace(temporary, path)
    return count


def _write_products(spec: Spec, landing: Path, written: list[str]) -> int:
    relative = FILES["products"].format(n=spec.increment)
    path = landing / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = sources.product_lines(spec)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    _replace(temporary, path)
    written.append(relative)
    return len(lines) - 1


def _write_source(
    source: str,
    rows: Iterator[Any],
    landing: Path,
    people_file: Path,
    increment: int,
    truth: _Labels,
    written: list[str],
) -> int:
    if source == "people":
        return _write_lines(rows, people_file, sources.PEOPLE_HEADER, source, people_file.name, _Labels())
    relative = FILES[source].format(n=increment)
    if source == "third_party":
        count = _write_parquet(rows, landing / relative, relative, truth)
    else:
        count = _write_lines(rows, landing / relative, _HEADERS.get(source), source, relative, truth)
    written.append(relative)
    logger.info("wrote %s (%d rows)", relative, count)
    return count


def _check_arguments(
    landing: Path, labels: Path, people: int, seed: int, increment: int, as_of: datetime, config: SampleConfig
) -> None:
    if not isinstance(config, SampleConfig):
        raise TypeError(f"config must be a SampleConfig, got {type(config).__name__}")
    if people < 1:
        raise ValueError(f"people must be at least 1, got {people}")
    if people * 2 * (1 + increment * config.increments.new_people) >= 10**7:
        raise ValueError(f"people={people} is too many for 7-digit CRM and shop ids (under 5 million)")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if not 0 <= increment < 100:
        raise ValueError(f"increment must be in 0..99, got {increment}")
    if as_of.tzinfo is None:
        raise ValueError(f"as_of must carry a time zone (UTC), got {as_of.isoformat()}")
    resolved_landing, resolved_labels = landing.resolve(), labels.resolve()
    if resolved_labels == resolved_landing or resolved_landing in resolved_labels.parents:
        raise ValueError(f"labels folder {labels} must not be inside the landing folder {landing}")


def request_fingerprint(
    *, people: int, seed: int, increment: int, as_of: datetime, config: SampleConfig
) -> dict[str, Any]:
    """What determines the output bytes: the same fingerprint means the same files."""
    return {
        "generator_version": GENERATOR_VERSION,
        "people": people,
        "seed": seed,
        "increment": increment,
        "as_of": as_of.isoformat(),
        "config": config.model_dump(mode="json"),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_path(labels: Path, increment: int) -> Path:
    return Path(labels) / f"manifest_{increment}.json"


def is_generated(
    *, landing: str | os.PathLike[str], labels: str | os.PathLike[str], fingerprint: dict[str, Any]
) -> dict[str, int] | None:
    """The counts of an earlier identical run whose files are all still there, unchanged; else None."""
    manifest_file = manifest_path(Path(labels), fingerprint["increment"])
    if not manifest_file.is_file():
        return None
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    if manifest.get("request") != fingerprint:
        return None
    for name, digest in manifest["files"].items():
        root = Path(labels) if name.startswith("labels/") else Path(landing)
        file = root / name.removeprefix("labels/")
        if not file.is_file() or _sha256(file) != digest:
            return None
    return manifest["counts"]


def generate(
    spark: SparkSession | None,
    *,
    landing: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    people: int,
    seed: int,
    increment: int = 0,
    as_of: datetime,
    config: SampleConfig,
    only: Collection[str] | None = None,
) -> dict[str, int]:
    """Write one increment of the sample world's raw sources under ``landing`` and its truth under ``labels``.

    Args:
        spark: the session (from :func:`lakecdp.spark.get_session`) that generates the rows in
            parallel, or None to generate them in this process (no JVM; one machine, up to a
            few hundred thousand people): the same bytes either way.
        landing: the landing folder; one sub-folder per source (docs/sample-data.md).
        labels: where ``entities_<n>.csv``, ``planted_<n>.csv`` and ``people_<n>.csv`` go; must not
            be inside ``landing``.
        people: the population of increment 0; each later increment adds
            ``config.increments.new_people`` of it.
        seed: fixes the world; the same seed, people, increment, as_of and config give byte-identical files.
        increment: 0 for the initial load, n >= 1 for later deliveries of the same world.
        as_of: the delivery's "now"; increment n >= 1 covers the ``config.increments.days`` before it,
            so pass the previous increment's as_of plus that many days.
        config: rates and sizes (``conf/sample.yaml``).
        only: write just these sources (benchmarks of one stage); the world — people, their
            records and the labels of the written sources — is the same as a full run's.

    Returns:
        Rows written per source (header lines excluded), and ``planted``, ``entities``, ``people``.

    Example:
        >>> generate(spark, landing="warehouse/landing", labels="warehouse/labels", people=300,
        ...          seed=7, as_of=datetime(2026, 11, 1, tzinfo=timezone.utc), config=config)
        {'crm': 221, 'shop_customers': 190, ...}
    """
    landing_dir, labels_dir = Path(landing), Path(labels)
    _check_arguments(landing_dir, labels_dir, people, seed, increment, as_of, config)
    unknown = sorted(set(only or ()) - set(_ROW_FUNCTIONS))
    if unknown:
        raise ValueError(f"only: unknown source(s) {unknown}; known: {sorted(_ROW_FUNCTIONS)}")
    spec = Spec(seed=seed, config=config, initial=people, increment=increment, as_of_ms=int(as_of.timestamp() * 1000))
    logger.info(
        "generating increment %d of %d people (seed %d) as of %s", increment, spec.population, seed, as_of.isoformat()
    )
    truth = _Labels()
    counts: dict[str, int] = {}
    written: list[str] = []
    if increment == 0:
        counts["products"] = _write_products(spec, landing_dir, written)
    people_file = labels_dir / f"people_{increment}.csv"
    if spark is None:
        in_order: Iterator[Any] = _sorted_rows_in_process(spec, only)
        for source, rows in groupby(in_order, key=itemgetter("source")):
            counts[source] = _write_source(source, rows, landing_dir, people_file, increment, truth, written)
    else:
        # one global sort by (source, key): a single Spark job streams every file's rows in order
        # persisted: the sort's sampling pass would otherwise run the Python generation a second time
        rows_frame = world_rows(spark, spec, only).persist()
        try:
            ordered = rows_frame.orderBy("source", "sort_key")
            for source, rows in groupby(ordered.toLocalIterator(prefetchPartitions=True), key=itemgetter("source")):
                counts[source] = _write_source(source, rows, landing_dir, people_file, increment, truth, written)
        finally:
            rows_frame.unpersist()
    for source in _ROW_FUNCTIONS:
        if source not in counts and (
            only is None or source in only or source == "people"
        ):  # no rows at all: still a valid, empty file
            counts[source] = _write_source(source, iter(()), landing_dir, people_file, increment, truth, written)
    entities_file = labels_dir / f"entities_{increment}.csv"
    counts["entities"] = _write_csv(
        entities_file, ("source", "source_record_id", "person_id", "household_id"), sorted(truth.entities)
    )
    planted_file = labels_dir / f"planted_{increment}.csv"
    counts["planted"] = _write_csv(
        planted_file,
        ("source", "file", "line", "record_key", "defect", "expected"),
        sorted(truth.planted, key=lambda p: (p[1], p[2])),
    )
    files = {name: _sha256(landing_dir / name) for name in sorted(written)}
    for label_file in (people_file, entities_file, planted_file):
        files[f"labels/{label_file.name}"] = _sha256(label_file)
    request = request_fingerprint(people=people, seed=seed, increment=increment, as_of=as_of, config=config)
    if only is not None:  # a partial world never passes for the full one (the demo's skip check)
        request = {**request, "only": sorted(only)}
    manifest = {
        "request": request,
        "files": files,
        "counts": counts,
    }
    manifest_path(labels_dir, increment).write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    logger.info("increment %d done: %s", increment, counts)
    return counts
