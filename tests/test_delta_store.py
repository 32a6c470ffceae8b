"""lakecdp.delta_store.DeltaStore on real Delta tables written with delta-rs, no Spark.

The identity step on the duckdb backend and the embedded segment engine write through it; what
Spark reads back from its tables is checked in tests/test_identity_local.py (engine-backed).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lakecdp import catalog
from lakecdp.context import JobContext
from lakecdp.delta_store import DeltaStore, arrow_schema, arrow_table, native_filesystem

IDS = "identity.id_map"
CHANGES = "identity.id_changes"
SCHEMA = "record_id string NOT NULL, customer_id string, cluster_size int, run_id string"


@pytest.fixture
def store(project) -> DeltaStore:
    return DeltaStore(JobContext.create(project, None, run_id="test"), label="lakecdp-test")


def rows(store: DeltaStore, name: str) -> list[tuple]:
    return sorted(tuple(r.values()) for r in store.read(name).to_pylist())


def id_rows(*rows: tuple) -> pa.Table:
    return pa.table(
        {
            "record_id": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "cluster_size": pa.array([r[2] for r in rows], pa.int32()),
            "run_id": [r[3] for r in rows],
        }
    )


def history(store: DeltaStore, name: str) -> list[tuple[str, str | None]]:
    """(operation, userMetadata) per commit, oldest first."""
    commits = sorted(DeltaTable(store.path(name)).history(), key=lambda h: h["version"])
    return [(h["operation"], h.get("userMetadata")) for h in commits]


def test_catalogue_schemas_become_arrow_schemas():
    assert arrow_schema(catalog.CUSTOMER_PROFILE.ddl).field("provenance").type == pa.map_(
        pa.string(), pa.struct([("record_id", pa.string()), ("source", pa.string())])
    )
    assert arrow_schema(catalog.CUSTOMER_PROFILE.ddl).field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert arrow_schema(catalog.ID_MAP.ddl).field("flags").type == pa.list_(pa.string())
    assert arrow_schema(catalog.ID_MAP.ddl).field("cluster_size").type == pa.int32()
    exposures = arrow_schema(catalog.CAMPAIGN_EXPOSURES.ddl)
    assert exposures.field("campaign_id").nullable is False and exposures.field("segment_id").nullable is True
    with pytest.raises(ValueError, match="unsupported type 'varchar'"):
        arrow_schema("a varchar")


def test_upsert_writes_only_what_differs_and_deletes_what_is_gone(store):
    first = id_rows(("r1", "c1", 1, "run-1"), ("r2", "c2", 2, "run-1"), ("r3", "c2", 2, "run-1"))
    assert (
        store.upsert(first, IDS, SCHEMA, keys=["record_id"], compare=["customer_id", "cluster_size"], run_id="run-1")
        == 3
    )
    # the table is created with change data feed on and without deletion vectors (delta-rs reads it)
    assert DeltaTable(store.path(IDS)).metadata().configuration == {
        "delta.enableChangeDataFeed": "true",
        "delta.enableDeletionVectors": "false",
    }
    second = id_rows(
        ("r1", "c1", 1, "run-2"),  # same compared content: the stored row (and its run id) stays
        ("r2", "c9", 1, "run-2"),  # moved: replaced
        ("r4", "c4", 1, "run-2"),  # new: inserted
    )  # r3 is gone: deleted
    written = store.upsert(
        second,
        IDS,
        SCHEMA,
        keys=["record_id"],
        compare=["customer_id", "cluster_size"],
        delete_missing=True,
        run_id="run-2",
    )
    assert written == 3
    assert rows(store, IDS) == [("r1", "c1", 1, "run-1"), ("r2", "c9", 1, "run-2"), ("r4", "c4", 1, "run-2")]
    # the same truth again: no commit at all
    version = store.version(IDS)
    assert (
        store.upsert(
            second, IDS, SCHEMA, keys=["record_id"], compare=["customer_id"], delete_missing=True, run_id="run-3"
        )
        == 0
    )
    assert store.version(IDS) == version
    assert [m for _, m in history(store, IDS)] == [None, "lakecdp-test append run-1", "lakecdp-test merge run-2"]


def test_upsert_with_a_scope_deletes_only_inside_it(store):
    store.upsert(
        id_rows(("r1", "c1", 1, "a"), ("r2", "c2", 1, "a"), ("r3", "c3", 1, "a")),
        IDS,
        SCHEMA,
        keys=["record_id"],
        run_id="a",
    )
    scope = pa.table({"record_id": ["r1", "r2"]})
    # r2 is in scope and absent: deleted; r3 is outside the scope: left alone
    store.upsert(id_rows(("r1", "c7", 1, "b")), IDS, SCHEMA, keys=["record_id"], scope=scope, run_id="b")
    assert rows(store, IDS) == [("r1", "c7", 1, "b"), ("r3", "c3", 1, "a")]
    with pytest.raises(ValueError, match="exclude each other"):
        store.upsert(id_rows(), IDS, SCHEMA, keys=["record_id"], scope=scope, delete_missing=True, run_id="c")


def test_upsert_matches_null_keys(store):
    # identity.id_changes: a "new" change has no old customer id; written again, it is the same row
    at = datetime(2026, 11, 1, tzinfo=timezone.utc)
    change = pa.table(
        {
            "run_id": ["run-1"],
            "change_type": ["new"],
            "old_customer_id": pa.array([None], pa.string()),
            "new_customer_id": ["c1"],
            "record_count": pa.array([2], pa.int32()),
            "changed_at": pa.array([at], pa.timestamp("us", tz="UTC")),
        }
    )
    keys = catalog.ID_CHANGES.keys
    store.upsert(change, CHANGES, catalog.ID_CHANGES.ddl, keys=keys, run_id="run-1")
    assert store.upsert(change, CHANGES, catalog.ID_CHANGES.ddl, keys=keys, run_id="run-1") == 0
    recounted = change.set_column(4, "record_count", pa.array([3], pa.int32()))
    assert store.upsert(recounted, CHANGES, catalog.ID_CHANGES.ddl, keys=keys, run_id="run-1") == 1
    assert rows(store, CHANGES) == [("run-1", "new", None, "c1", 3, at)]


def test_rows_are_read_in_sparks_order(store, tmp_path):
    # Spark reads the largest file first; Splink's u sampling depends on the order of the records
    path = store.path(IDS)
    store.create_if_missing(IDS, SCHEMA)
    small = id_rows(("s1", "c", 1, "x"))
    large = id_rows(*[(f"l{i:03}", "c", 1, "x") for i in range(200)])
    write_deltalake(path, small.cast(arrow_schema(SCHEMA)), mode="append")
    write_deltalake(path, large.cast(arrow_schema(SCHEMA)), mode="append")
    order = store.read_in_spark_order(IDS).column("record_id").to_pylist()
    assert order == [f"l{i:03}" for i in range(200)] + ["s1"]
    # as of the first append: the small file alone
    assert store.read_in_spark_order(IDS, version=1).column("record_id").to_pylist() == ["s1"]


def test_a_duckdb_relation_is_appended_once_as_parquet_with_its_statistics(store):
    """The embedded segment engine's path for millions of changes: the relation's rows are written
    as one Parquet file by pyarrow, delta-rs commits it as one add action under the run's app
    transaction."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    name, schema = catalog.CHANGES.name, catalog.CHANGES.ddl
    store.create_if_missing(name, schema)
    changes = con.sql(
        "SELECT * FROM (VALUES ('c2', 'r1', 'vip', 'C2', '', 'exited', NULL, TIMESTAMP '2026-11-01 10:00:00', '{}'),"
        " ('c1', 'r1', 'vip', 'C1', '', 'entered', NULL, TIMESTAMP '2026-11-01 10:00:00', '{\"rule\":\"x\"}'))"
        " AS t(change_id, run_id, segment_id, customer_id, member_key, change_type, previous_customer_id,"
        " changed_at, reason)"
    )
    app = "lakecdp.segments.changes/r1"
    assert store.append_once(changes, name, schema, app_id=app, run_id="r1") == 1
    assert store.append_once(changes.filter("false"), name, schema, app_id=app, run_id="r1") is None
    table = DeltaTable(store.path(name))
    assert table.version() == 1 and table.transaction_version(app) == 1
    at = datetime(2026, 11, 1, 10, tzinfo=timezone.utc)
    assert rows(store, name) == [
        ("c1", "r1", "vip", "C1", "", "entered", None, at, '{"rule":"x"}'),
        ("c2", "r1", "vip", "C2", "", "exited", None, at, "{}"),
    ]
    assert history(store, name)[-1] == ("WRITE", "lakecdp-test changes r1")
    (stats,) = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    assert stats["num_records"] == 2 and stats["min.customer_id"] == "C1" and stats["max.customer_id"] == "C2"
    assert stats["null_count.previous_customer_id"] == 2 and stats["min.changed_at"] == at
    # the file lies in the table's directory, as the log names it
    assert [p.rsplit("/", 1)[0] for p in table.file_uris()] == [store.path(name).rstrip("/")]


def test_an_arrow_stream_is_appended_as_one_file_in_the_catalogues_column_order(store):
    """An Arrow stream (the embedded engine's changes, handed over without a copy) is written as
    one file: columns in the catalogue's order whatever the stream's, one add action."""
    name, schema = catalog.MEMBERSHIP.name, catalog.MEMBERSHIP.ddl
    at = datetime(2026, 11, 1, 10, tzinfo=timezone.utc)
    stays = pa.table(
        {
            "reason": ['{"rule":"x"}', "{}"],
            "customer_id": ["C1", "C2"],
            "segment_id": ["vip", "vip"],
            "member_key": ["", ""],
            "entered_at": pa.array([at, at], pa.timestamp("us", tz="UTC")),
            "exited_at": pa.nulls(2, pa.timestamp("us", tz="UTC")),
            "entered_run_id": ["r1", "r1"],
            "exited_run_id": pa.nulls(2, pa.string()),
            "is_current": [True, True],
        }
    )
    store.append(stays.to_reader(), name, schema, run_id="r1")
    table = DeltaTable(store.path(name))
    assert table.version() == 1 and len(table.file_uris()) == 1
    assert rows(store, name) == [
        ("vip", "C1", "", at, None, "r1", None, '{"rule":"x"}', True),
        ("vip", "C2", "", at, None, "r1", None, "{}", True),
    ]
    assert history(store, name)[-1] == ("WRITE", "lakecdp-test append r1")
    incomplete = stays.drop_columns(["reason"]).to_reader()
    with pytest.raises(ValueError, match=r"segments.membership: rows to append lack columns \['reason'\]"):
        store.append(incomplete, name, schema, run_id="r2")
    assert DeltaTable(store.path(name)).version() == 1


def test_a_duckdb_relation_with_nulls_in_a_not_null_column_is_refused(store):
    import duckdb

    con = duckdb.connect()
    store.create_if_missing(IDS, SCHEMA)
    bad = con.sql("SELECT * FROM (VALUES (NULL, 'C1', 1, 'r1')) AS t(record_id, customer_id, cluster_size, run_id)")
    with pytest.raises(ValueError, match=r"identity.id_map: .*NOT NULL columns \['record_id'\]"):
        store.append(bad, IDS, SCHEMA, run_id="r1")
    assert DeltaTable(store.path(IDS)).version() == 0 and rows(store, IDS) == []
    assert [p.name for p in Path(store.path(IDS)).glob("*.parquet")] == []


def logged_stats(path: str) -> list[dict]:
    """The statistics of every file added, as the log's JSON holds them (no checkpoint yet)."""
    import json

    return [
        json.loads(json.loads(line)["add"]["stats"])
        for commit in sorted(Path(path, "_delta_log").glob("*.json"))
        for line in commit.read_text().splitlines()
        if line.startswith('{"add"')
    ]


def test_an_arrow_table_is_appended_as_one_file_as_sparks_session_writes_it(store):
    """``append`` of an Arrow table (bronze, quarantine, silver rows) writes one Parquet file
    with pyarrow, not delta-rs: nested columns as Spark reads them, statistics of the table's
    ``delta.dataSkippingStatsColumns`` only (in the log and in the file), UTC timestamps in the
    log rounded to milliseconds outwards, no dictionary for a column unique by construction,
    one row group however the table is chunked; nulls in a NOT NULL column refuse the file."""
    import pyarrow.parquet as pq

    name = "quarantine.crm"
    schema = catalog.QUARANTINE.ddl
    store.create_if_missing(name, schema)
    configuration = DeltaTable(store.path(name)).metadata().configuration
    kept = configuration["delta.dataSkippingStatsColumns"].split(",")
    assert "quarantined_at" in kept and "reasons" not in kept and "raw" not in kept
    first = datetime(2026, 11, 1, 10, 0, 0, 999, tzinfo=timezone.utc)
    last = datetime(2026, 11, 1, 10, 0, 1, 123456, tzinfo=timezone.utc)
    fields = arrow_schema(schema)
    values = {
        "source_file": ["crm/a.csv", "crm/a.csv", "crm/b.csv"],
        "line": [7, 3, 12],
        "raw": ["x,y", "p,q", "z"],
        "reasons": [["INVALID_EMAIL"], ["MALFORMED_LINE", "BAD_ENCODING"], []],
        "detail": ["INVALID_EMAIL(email)", None, "MALFORMED_LINE"],
        "run_id": ["r1", "r1", "r1"],
        "quarantined_at": [first, last, first],
    }
    assert set(values) <= set(fields.names)
    full = {column: pa.array(values.get(column, [None] * 3), fields.field(column).type) for column in fields.names}
    table = pa.table(full)
    # three chunks of one row: one row group all the same
    chunked = pa.concat_tables([table.slice(i, 1) for i in range(3)])
    store.append(chunked, name, schema, run_id="r1")
    (stats,) = logged_stats(store.path(name))
    assert stats["numRecords"] == 3
    assert set(stats["nullCount"]) <= set(kept)
    assert stats["minValues"]["quarantined_at"] == "2026-11-01T10:00:00.000Z"
    assert stats["maxValues"]["quarantined_at"] == "2026-11-01T10:00:01.124Z"
    assert stats["minValues"]["line"] == 3 and stats["maxValues"]["line"] == 12
    assert stats["minValues"]["source_file"] == "crm/a.csv" and stats["maxValues"]["source_file"] == "crm/b.csv"
    (file,) = Path(store.path(name)).glob("*.parquet")
    meta = pq.ParquetFile(file).metadata
    assert meta.num_row_groups == 1
    columns = {meta.row_group(0).column(j).path_in_schema: meta.row_group(0).column(j) for j in range(meta.num_columns)}
    assert columns["reasons.list.element"].statistics is None and columns["raw"].statistics is None
    assert columns["line"].statistics.min == 3
    stored = sorted(store.read(name).select(["line", "reasons", "detail", "quarantined_at"]).to_pylist(), key=str)
    assert [(r["line"], r["reasons"], r["detail"], r["quarantined_at"]) for r in stored] == [
        (12, [], "MALFORMED_LINE", first),
        (3, ["MALFORMED_LINE", "BAD_ENCODING"], None, last),
        (7, ["INVALID_EMAIL"], "INVALID_EMAIL(email)", first),
    ]
    assert history(store, name)[-1] == ("WRITE", "lakecdp-test append r1")

    # a column unique by construction is written without a dictionary, the others with one
    ids = id_rows(*[(f"crm:{i}", f"C{i % 3}", 1, "r1") for i in range(50)])
    store.append(ids, IDS, SCHEMA, run_id="r1")
    (ids_file,) = Path(store.path(IDS)).glob("*.parquet")
    group = pq.ParquetFile(ids_file).metadata.row_group(0)
    encodings = {group.column(j).path_in_schema: group.column(j).encodings for j in range(group.num_columns)}
    assert not any("DICTIONARY" in e for e in encodings["record_id"])
    assert any("DICTIONARY" in e for e in encodings["customer_id"])
    # without dataSkippingStatsColumns every column of a narrow table has statistics
    (id_stats,) = logged_stats(store.path(IDS))
    assert set(id_stats["nullCount"]) == {"record_id", "customer_id", "cluster_size", "run_id"}

    no_id = id_rows(("crm:1", "C1", 1, "r2")).set_column(0, "record_id", pa.array([None], pa.string()))
    with pytest.raises(ValueError, match=r"identity.id_map: .*NOT NULL columns \['record_id'\]"):
        store.append(no_id, IDS, SCHEMA, run_id="r2")
    assert DeltaTable(store.path(IDS)).version() == 1 and len(list(Path(store.path(IDS)).glob("*.parquet"))) == 1


def test_a_merge_within_values_reads_only_those_rows_and_writes_as_sparks_session(store):
    """``merge(within=(column, values))`` matches only stored rows holding one of the values
    there (what lets delta-rs skip other sources' files); the files delta-rs writes have no
    dictionary for a column unique by construction and statistics only of the table's
    statistics columns."""
    import pyarrow.parquet as pq

    name, schema = catalog.CUSTOMER_RECORDS.name, catalog.CUSTOMER_RECORDS.ddl
    fields = arrow_schema(schema)

    def records(*rows: tuple[str, str, str]) -> pa.Table:
        given = {"record_id": [r[0] for r in rows], "source": [r[1] for r in rows], "email": [r[2] for r in rows]}
        return pa.table({f.name: pa.array(given.get(f.name, [None] * len(rows)), f.type) for f in fields})

    store.append(records(("crm:1", "crm", "a@x"), ("shop:1", "shop", "b@x")), name, schema, run_id="r1")
    # a stored row outside the values is never matched: its key is inserted again beside it
    store.merge(records(("crm:1", "crm", "c@x"), ("shop:1", "crm", "d@x")), name, schema, keys=["record_id"],
                run_id="r2", within=("source", ["crm", "it's"]))  # fmt: skip
    stored = sorted((r["record_id"], r["source"], r["email"]) for r in store.read(name).to_pylist())
    assert stored == [("crm:1", "crm", "c@x"), ("shop:1", "crm", "d@x"), ("shop:1", "shop", "b@x")]
    # the append's one file (pyarrow's) held crm:1: the MERGE rewrote it with delta-rs (parquet-rs)
    written = {
        pq.ParquetFile(Path(store.path(name), path)).metadata.created_by.split(" version")[0]: path
        for path in [uri.rsplit("/", 1)[1] for uri in DeltaTable(store.path(name)).file_uris()]
    }
    assert set(written) == {"parquet-rs"}
    meta = pq.ParquetFile(Path(store.path(name), written["parquet-rs"])).metadata
    group = meta.row_group(0)
    chunks = {group.column(j).path_in_schema: group.column(j) for j in range(group.num_columns)}
    assert not any("DICTIONARY" in e for e in chunks["record_id"].encodings)
    assert any("DICTIONARY" in e for e in chunks["source"].encodings)
    assert chunks["source"].statistics is not None and chunks["source"].statistics.has_min_max
    assert chunks["email"].statistics is None or not chunks["email"].statistics.has_min_max


def test_an_append_to_a_table_lakecdp_did_not_lay_out_goes_through_delta_rs(store):
    """A partitioned table or one with a CHECK constraint (made elsewhere, say by hand on
    Databricks) gets what its layout asks: delta-rs writes an Arrow table into its partitions and
    enforces its constraint; a relation or stream, which only pyarrow writes, is refused."""
    import duckdb

    rows = id_rows(("crm:1", "C1", 1, "r1"), ("shop:1", "C2", 2, "r2"))
    DeltaTable.create(store.path(IDS), arrow_schema(SCHEMA), partition_by=["run_id"])
    store.append(rows, IDS, SCHEMA, run_id="r1")
    table = DeltaTable(store.path(IDS))
    assert sorted(p.parent.name for p in Path(store.path(IDS)).rglob("*.parquet")) == ["run_id=r1", "run_id=r2"]
    assert sorted(tuple(r.values()) for r in store.read(IDS).to_pylist()) == [
        ("crm:1", "C1", 1, "r1"),
        ("shop:1", "C2", 2, "r2"),
    ]
    assert history(store, IDS)[-1] == ("WRITE", "lakecdp-test append r1")
    relation = duckdb.connect().sql(
        "SELECT 'crm:2' AS record_id, 'C3' AS customer_id, 1 AS cluster_size, 'r3' AS run_id"
    )
    with pytest.raises(ValueError, match=r"identity.id_map: partitioned by \['run_id'\]; a relation"):
        store.append(relation, IDS, SCHEMA, run_id="r3")
    assert DeltaTable(store.path(IDS)).version() == table.version()

    DeltaTable.create(store.path(CHANGES), arrow_schema(SCHEMA))
    DeltaTable(store.path(CHANGES)).alter.add_constraint({"small": "cluster_size < 2"})
    with pytest.raises(Exception, match="failed validation check"):
        store.append(rows, CHANGES, SCHEMA, run_id="r1")
    assert DeltaTable(store.path(CHANGES)).to_pyarrow_table().num_rows == 0


def test_partitioned_tables_read_through_the_native_filesystem_give_delta_rs_rows(tmp_path):
    # partition values whose folder names are %-encoded on disk; the oracle is delta-rs' own reader
    values = ["a b", "x/y", "é%20", "q=1", None]
    write_deltalake(str(tmp_path / "t"), pa.table({"p": values, "v": [1, 2, 3, 4, 5]}), partition_by=["p"])
    table = DeltaTable(str(tmp_path / "t"))
    assert native_filesystem(table) is not None
    got = arrow_table(table, columns=["v", "p"], filters=[("v", ">", 1)]).sort_by("v").to_pylist()
    assert got == [{"v": 2, "p": "x/y"}, {"v": 3, "p": "é%20"}, {"v": 4, "p": "q=1"}, {"v": 5, "p": None}]


# A scan still under way when the interpreter exits: its Arrow I/O threads drop the last reference
# to the filesystem. With delta-rs' default PyFileSystem (a Python object) that took the GIL during
# finalisation and the process died after its work (hang, SIGSEGV or "terminate called without an
# active exception", exit 134): 10 of 10 runs before the native filesystem, 0 of 10 after.
_READ_THEN_EXIT = """
import sys
from deltalake import DeltaTable
from lakecdp.delta_store import arrow_dataset
batches = arrow_dataset(DeltaTable(sys.argv[1])).to_batches(batch_size=10)
assert next(iter(batches)).num_rows == 10
"""


def test_a_process_that_read_a_table_exits_cleanly(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "t"
    for start in range(0, 2000, 100):
        write_deltalake(str(path), pa.table({"v": list(range(start, start + 100))}), mode="append")
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", _READ_THEN_EXIT, str(path)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(("asked", "expected"), [(None, {"jemalloc", "system"}), ("mimalloc", {"mimalloc"})])
def test_arrow_allocates_with_jemalloc_unless_the_environment_names_a_pool(asked, expected):
    """A fresh process: importing delta_store makes jemalloc (or, in a pyarrow built without it,
    the system allocator) Arrow's pool; ARROW_DEFAULT_MEMORY_POOL, when set, is left to decide."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if asked:
        env["ARROW_DEFAULT_MEMORY_POOL"] = asked
    code = "import lakecdp.delta_store, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() in expected
