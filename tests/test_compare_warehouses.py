"""The warehouse comparison of the parity tier and bench.compare_warehouses (tests/support/warehouses.py)
on small Delta tables written with delta-rs (no Spark): expected outcomes by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

from tests.support.warehouses import Options, compare_table, compare_warehouses, differing_files

AFFINITY = pa.list_(pa.struct([("category", pa.string()), ("score", pa.float64())]))


def _features(rows: list[dict]) -> pa.Table:
    schema = pa.schema(
        [
            ("customer_id", pa.string()),
            ("monetary", pa.float64()),
            ("affinities", AFFINITY),
            ("counts", pa.map_(pa.string(), pa.int64())),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _row(customer: str, monetary: float, score: float, counts: list[tuple[str, int]]) -> dict:
    return {
        "customer_id": customer,
        "monetary": monetary,
        "affinities": [{"category": "shoes", "score": score}],
        "counts": counts,
    }


def _warehouse(root: Path, rows: list[dict], *, runs_at: str = "2026-11-01T10:00:00") -> Path:
    write_deltalake(str(root / "gold" / "features"), _features(rows))
    runs = pa.table({"run_id": ["r1"], "started_at": [runs_at]})
    write_deltalake(str(root / "ops" / "runs"), runs)
    return root


BASE = [
    _row("c1", 10.5, 0.1 + 0.2, [("a", 1), ("b", 2)]),
    _row("c2", math.nan, 0.25, []),
]


def test_same_rows_in_another_order_with_maps_in_another_order_and_nan_are_identical(tmp_path):
    left = _warehouse(tmp_path / "l", BASE)
    right = _warehouse(tmp_path / "r", [_row("c2", math.nan, 0.25, []), _row("c1", 10.5, 0.3, [("b", 2), ("a", 1)])])
    # 0.1 + 0.2 is not 0.3: exact unless the column is named close
    diff = compare_warehouses(left, right, Options(drop={"ops/runs": {"started_at"}}))
    assert [d.table for d in diff.differing] == ["gold/features"]
    (features,) = diff.differing
    assert features.differing_columns == ["affinities"]
    assert (features.only_left_count, features.only_right_count) == (1, 1)
    assert features.only_left[0]["affinities"] == [{"category": "shoes", "score": 0.30000000000000004}]

    close = Options(drop={"ops/runs": {"started_at"}}, close={"gold/features": {"affinities"}})
    assert compare_warehouses(left, right, close).identical


def test_a_double_beyond_the_tolerance_or_outside_the_named_columns_differs(tmp_path):
    left = _warehouse(tmp_path / "l", BASE)
    right = _warehouse(tmp_path / "r", [BASE[0] | {"monetary": 10.5 * (1 + 1e-13)}, BASE[1]])
    options = Options(drop={"ops/runs": {"started_at"}}, close={"gold/features": {"affinities"}})
    diff = compare_warehouses(left, right, options)
    assert [(d.table, d.differing_columns) for d in diff.differing] == [("gold/features", ["monetary"])]

    far = _warehouse(
        tmp_path / "far", [BASE[0] | {"affinities": [{"category": "shoes", "score": 0.3 * (1 + 1e-9)}]}, BASE[1]]
    )
    diff = compare_warehouses(left, far, options)
    assert [(d.table, d.differing_columns) for d in diff.differing] == [("gold/features", ["affinities"])]
    near = _warehouse(tmp_path / "near", [BASE[0] | {"affinities": [{"category": "shoes", "score": 0.3}]}, BASE[1]])
    assert compare_warehouses(left, near, options).identical


def test_a_column_is_left_out_only_of_the_tables_named(tmp_path):
    left = _warehouse(tmp_path / "l", BASE)
    right = _warehouse(tmp_path / "r", BASE, runs_at="2026-11-01T10:00:05")
    assert [d.table for d in compare_warehouses(left, right).differing] == ["ops/runs"]
    diff = compare_warehouses(left, right, Options(drop={"gold/features": {"started_at"}}))
    assert [d.table for d in diff.differing] == ["ops/runs"]
    diff = compare_warehouses(left, right, Options(drop={"ops/runs": {"started_at"}}))
    assert diff.identical
    assert diff.same["ops/runs"] == "1 rows, 1 columns (dropped started_at)"


def test_tables_on_one_side_only_and_rows_counted_as_a_multiset(tmp_path):
    left = _warehouse(tmp_path / "l", BASE)
    right = _warehouse(tmp_path / "r", [*BASE, BASE[0]])
    write_deltalake(str(right / "segments" / "changes"), pa.table({"x": [1]}))
    diff = compare_warehouses(left, right, Options(drop={"ops/runs": {"started_at"}}))
    assert diff.only_right == ["segments/changes"] and diff.only_left == []
    (features,) = diff.differing
    assert (features.left_count, features.right_count) == (2, 3)
    assert (features.only_left_count, features.only_right_count) == (0, 1)


def test_tables_compared_at_a_version_of_each_side(tmp_path):
    left = _warehouse(tmp_path / "l", BASE)
    right = tmp_path / "r"
    # the right side took two commits to hold the same rows
    write_deltalake(str(right / "gold" / "features"), _features(BASE[:1]))
    write_deltalake(str(right / "gold" / "features"), _features(BASE[1:]), mode="append")
    assert compare_table(left, right, "gold/features", Options(), versions=(0, 1)) == "2 rows, 4 columns"
    early = compare_table(left, right, "gold/features", Options(), versions=(0, 0))
    assert not isinstance(early, str)
    assert early.table == "gold/features at versions 0 / 0"
    assert (early.only_left_count, early.only_right_count) == (1, 0)


def test_differing_files(tmp_path):
    for side, text in (("l", "a"), ("r", "b")):
        (tmp_path / side / "x").mkdir(parents=True)
        (tmp_path / side / "x" / "same.txt").write_text("same")
        (tmp_path / side / "x" / "other.txt").write_text(text)
        (tmp_path / side / f"only_{side}.txt").write_text("")
    assert differing_files(tmp_path / "l", tmp_path / "r") == ["- only_l.txt", "+ only_r.txt", "! x/other.txt"]
