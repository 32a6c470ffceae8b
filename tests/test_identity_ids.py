"""Stable customer ids across identity runs: hand-written previous maps, clusters and outcomes."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest
from pyspark.sql import functions as F

from lakecdp.columns import MissingColumnsError
from lakecdp.identity.stable_ids import (
    ID_CHANGES_SCHEMA,
    ID_MAP_SCHEMA,
    assign_customer_ids,
)

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)
PREVIOUS_RUN = datetime(2026, 10, 1, tzinfo=timezone.utc)
OLD = datetime(2025, 6, 1, tzinfo=timezone.utc)
NEWER = datetime(2026, 1, 1, tzinfo=timezone.utc)


def minted(min_record_id: str, previous_id: str = "") -> str:
    """The documented minted-id format, computed independently of the code under test."""
    text = f"{min_record_id}|2026-11-01T00:00:00.000000|{previous_id}"
    return "cus_" + hashlib.sha256(text.encode()).hexdigest()[:16]


def previous_map(spark, rows):
    """rows: (record_id, customer_id, cluster_size, id_created_at)."""
    return spark.createDataFrame(
        [(r, c, r.split(":")[0], size, 1.0, [], "run-0", PREVIOUS_RUN, created) for r, c, size, created in rows],
        ID_MAP_SCHEMA,
    )


def clusters_df(spark, rows):
    """rows: (record_id, cluster_key); cluster_size is counted here by hand-listed keys."""
    sizes: dict[str, int] = {}
    for _, key in rows:
        sizes[key] = sizes.get(key, 0) + 1
    return spark.createDataFrame(
        [(r, k, sizes[k], 1.0, []) for r, k in rows],
        "record_id string, cluster_key string, cluster_size int, link_confidence double, flags array<string>",
    )


# the Spark cases are the full suite's (5-24 s each on two loaded cores, ~1 min of make test):
# make test runs each case on DuckDB, the default backend; the full suite runs both, and
# test_identity_local's test_both_backends_write_the_same_identity_tables compares the two
# backends' id maps and id changes through the whole job
@pytest.fixture(params=[pytest.param("spark", marks=pytest.mark.slow), "duckdb"])
def engine(request) -> str:
    """Every case runs on both implementations: Spark (the spark backend) and DuckDB
    (lakecdp.identity.local, the duckdb backend)."""
    return request.param


def run(spark, clusters, previous, *, run_id="run-1", engine="spark"):
    if engine == "duckdb":
        from lakecdp.identity.local import assign_customer_ids_local

        with_source = clusters.withColumn("source", F.substring_index("record_id", ":", 1))
        id_map_rows, change_rows_arrow = assign_customer_ids_local(
            with_source.toArrow(),
            None if previous is None else previous.toArrow(),
            run_id=run_id,
            as_of=AS_OF,
            id_prefix="cus_",
        )
        id_map = spark.createDataFrame(id_map_rows, ID_MAP_SCHEMA)
        changes = spark.createDataFrame(change_rows_arrow, ID_CHANGES_SCHEMA)
    else:
        id_map, changes = assign_customer_ids(clusters, previous, run_id=run_id, as_of=AS_OF, id_prefix="cus_")
    ids = {r["record_id"]: r["customer_id"] for r in id_map.collect()}
    # (old, new) pairs are unique per run, so a set loses nothing
    change_rows = {
        (r["change_type"], r["old_customer_id"], r["new_customer_id"], r["record_count"]) for r in changes.collect()
    }
    return ids, change_rows, id_map


def test_no_change_keeps_ids_run_stamps_and_records_nothing(spark, engine):
    previous = previous_map(
        spark,
        [
            ("crm:1", "cus_A", 2, OLD),
            ("shop:1", "cus_A", 2, OLD),
            ("crm:2", "cus_B", 1, NEWER),
        ],
    )
    clusters = clusters_df(spark, [("crm:1", "crm:1"), ("shop:1", "crm:1"), ("crm:2", "crm:2")])
    ids, changes, id_map = run(spark, clusters, previous, engine=engine)
    assert ids == {"crm:1": "cus_A", "shop:1": "cus_A", "crm:2": "cus_B"}
    assert changes == set()
    # unchanged rows keep the run that last changed them, so a MERGE of them is a no-op
    stamps = {(r["record_id"], r["run_id"], r["updated_at"], r["source"], r["id_created_at"]) for r in id_map.collect()}
    assert stamps == {
        ("crm:1", "run-0", PREVIOUS_RUN.replace(tzinfo=None), "crm", OLD.replace(tzinfo=None)),
        ("shop:1", "run-0", PREVIOUS_RUN.replace(tzinfo=None), "shop", OLD.replace(tzinfo=None)),
        ("crm:2", "run-0", PREVIOUS_RUN.replace(tzinfo=None), "crm", NEWER.replace(tzinfo=None)),
    }


def test_first_run_and_new_person_get_minted_ids(spark, engine):
    clusters = clusters_df(spark, [("crm:1", "crm:1"), ("shop:9", "crm:1"), ("web:d1", "web:d1")])
    ids, changes, _ = run(spark, clusters, None, engine=engine)
    assert ids == {"crm:1": minted("crm:1"), "shop:9": minted("crm:1"), "web:d1": minted("web:d1")}
    assert changes == {("new", None, minted("crm:1"), 2), ("new", None, minted("web:d1"), 1)}

    # later: a known person plus one new record that joins them, and a brand-new person
    previous = previous_map(spark, [("crm:1", "cus_A", 1, OLD)])
    clusters = clusters_df(spark, [("crm:1", "crm:1"), ("shop:2", "crm:1"), ("crm:7", "crm:7")])
    ids, changes, _ = run(spark, clusters, previous, engine=engine)
    assert ids == {"crm:1": "cus_A", "shop:2": "cus_A", "crm:7": minted("crm:7")}
    # a new record joining a known person is no id change
    assert changes == {("new", None, minted("crm:7"), 1)}


def test_merge_keeps_the_id_most_records_held(spark, engine):
    previous = previous_map(
        spark,
        [
            ("crm:1", "cus_B", 3, NEWER),
            ("crm:2", "cus_B", 3, NEWER),
            ("shop:3", "cus_B", 3, NEWER),
            # the older id, but held by one record only
            ("web:d1", "cus_A", 1, OLD),
        ],
    )
    clusters = clusters_df(
        spark,
        [
            ("crm:1", "crm:1"),
            ("crm:2", "crm:1"),
            ("shop:3", "crm:1"),
            ("web:d1", "crm:1"),
        ],
    )
    ids, changes, _ = run(spark, clusters, previous, engine=engine)
    assert ids == {"crm:1": "cus_B", "crm:2": "cus_B", "shop:3": "cus_B", "web:d1": "cus_B"}
    assert changes == {("merge", "cus_A", "cus_B", 1)}


def test_merge_tie_keeps_the_oldest_id(spark, engine):
    previous = previous_map(
        spark,
        [
            ("crm:1", "cus_A", 1, NEWER),  # alphabetically first, but younger
            ("shop:1", "cus_Z", 1, OLD),
        ],
    )
    clusters = clusters_df(spark, [("crm:1", "crm:1"), ("shop:1", "crm:1")])
    ids, changes, _ = run(spark, clusters, previous, engine=engine)
    assert ids == {"crm:1": "cus_Z", "shop:1": "cus_Z"}
    assert changes == {("merge", "cus_A", "cus_Z", 1)}


def test_split_keeps_the_id_on_the_largest_part(spark, engine):
    previous = previous_map(
        spark,
        [
            ("crm:1", "cus_A", 3, OLD),
            ("crm:2", "cus_A", 3, OLD),
            ("shop:3", "cus_A", 3, OLD),
        ],
    )
    # crm:1 (the smallest record id) leaves: the two-record part keeps cus_A
    clusters = clusters_df(spark, [("crm:1", "crm:1"), ("crm:2", "crm:2"), ("shop:3", "crm:2")])
    ids, changes, id_map = run(spark, clusters, previous, engine=engine)
    assert ids == {"crm:1": minted("crm:1", "cus_A"), "crm:2": "cus_A", "shop:3": "cus_A"}
    assert changes == {("split", "cus_A", minted("crm:1", "cus_A"), 1)}
    created = {r["record_id"]: r["id_created_at"] for r in id_map.collect()}
    assert created == {
        "crm:1": AS_OF.replace(tzinfo=None),
        "crm:2": OLD.replace(tzinfo=None),
        "shop:3": OLD.replace(tzinfo=None),
    }


def test_merge_and_split_in_one_run(spark, engine):
    previous = previous_map(
        spark,
        [
            ("crm:1", "cus_A", 3, OLD),
            ("crm:2", "cus_A", 3, OLD),
            ("crm:3", "cus_A", 3, OLD),
            ("shop:1", "cus_B", 1, NEWER),
        ],
    )
    # {crm:1, crm:2, shop:1}: two cus_A votes -> cus_A; cus_B merges into it.
    # {crm:3}: split off cus_A, loses cus_A to the bigger part -> minted
    clusters = clusters_df(
        spark,
        [
            ("crm:1", "crm:1"),
            ("crm:2", "crm:1"),
            ("shop:1", "crm:1"),
            ("crm:3", "crm:3"),
        ],
    )
    ids, changes, _ = run(spark, clusters, previous, engine=engine)
    assert ids == {"crm:1": "cus_A", "crm:2": "cus_A", "shop:1": "cus_A", "crm:3": minted("crm:3", "cus_A")}
    assert changes == {("merge", "cus_B", "cus_A", 1), ("split", "cus_A", minted("crm:3", "cus_A"), 1)}


def test_split_part_that_loses_its_first_choice_takes_its_next_free_id(spark, engine):
    previous = previous_map(
        spark,
        [
            ("crm:1", "cus_A", 5, OLD),
            ("crm:2", "cus_A", 5, OLD),
            ("crm:3", "cus_A", 5, OLD),
            ("crm:4", "cus_A", 5, OLD),
            ("crm:5", "cus_A", 5, OLD),
            ("shop:1", "cus_B", 1, NEWER),
        ],
    )
    # {crm:4, crm:5, shop:1} prefers cus_A (2 votes) but {crm:1..3} holds 3 of cus_A's records,
    # so it keeps cus_A; the other part falls back to cus_B instead of minting a new id
    clusters = clusters_df(
        spark,
        [
            ("crm:1", "crm:1"),
            ("crm:2", "crm:1"),
            ("crm:3", "crm:1"),
            ("crm:4", "crm:4"),
            ("crm:5", "crm:4"),
            ("shop:1", "crm:4"),
        ],
    )
    ids, changes, _ = run(spark, clusters, previous, engine=engine)
    assert ids == {
        "crm:1": "cus_A",
        "crm:2": "cus_A",
        "crm:3": "cus_A",
        "crm:4": "cus_B",
        "crm:5": "cus_B",
        "shop:1": "cus_B",
    }
    assert changes == {("split", "cus_A", "cus_B", 2)}


def test_rerun_reproduces_ids_and_next_run_is_stable(spark, engine):
    clusters = clusters_df(spark, [("crm:1", "crm:1"), ("shop:1", "crm:1"), ("crm:2", "crm:2")])
    first_ids, first_changes, first_map = run(spark, clusters, None, run_id="run-a", engine=engine)
    again_ids, again_changes, _ = run(spark, clusters, None, run_id="run-b", engine=engine)
    assert again_ids == first_ids == {"crm:1": minted("crm:1"), "shop:1": minted("crm:1"), "crm:2": minted("crm:2")}
    assert again_changes == first_changes
    # the next run on the same clusters keeps every id and reports no change
    next_ids, next_changes, _ = run(spark, clusters, first_map, run_id="run-c", engine=engine)
    assert next_ids == first_ids
    assert next_changes == set()


def test_missing_columns_are_named(spark):
    bad = spark.createDataFrame([("crm:1", "crm:1")], "record_id string, cluster_key string")
    with pytest.raises(MissingColumnsError, match=r"clusters is missing columns \['cluster_size'"):
        assign_customer_ids(bad, None, run_id="r", as_of=AS_OF, id_prefix="cus_")
