"""One input-column check for every stage: ``lakecdp.columns.require_columns`` and its
``MissingColumnsError``; and Delta commit metadata passed per write, not through the session."""

from __future__ import annotations

import ast
from datetime import datetime, timezone
from pathlib import Path

import pytest
from deltalake import DeltaTable

from lakecdp.columns import MissingColumnsError, require_columns
from lakecdp.tables import Tables
from conftest import REPO_ROOT

LIB = REPO_ROOT / "lib" / "lakecdp"


def _definitions(name: str) -> list[str]:
    found = []
    for path in sorted(LIB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
                found.append(Path(path).relative_to(LIB).as_posix())
    return found


def test_one_class_and_one_function_in_the_whole_package():
    assert _definitions("MissingColumnsError") == ["columns.py"]
    assert _definitions("require_columns") == ["columns.py"]


def test_missing_columns_are_named_in_the_order_asked_with_what_the_input_has(spark):
    orders = spark.createDataFrame([("o1", 9.5)], "order_id string, total double")
    require_columns(orders, ("order_id", "total"), what="orders")  # nothing missing
    with pytest.raises(MissingColumnsError) as caught:
        require_columns(orders, ("status", "order_id", "customer_id", "status"), what="orders")
    assert str(caught.value) == "orders is missing columns ['status', 'customer_id']; it has ['order_id', 'total']"
    assert isinstance(caught.value, ValueError)
    with pytest.raises(TypeError, match="orders must be a DataFrame or an Arrow table, got list"):
        require_columns([("o1",)], ("order_id",), what="orders")


def test_every_stage_raises_the_shared_error(spark):
    from lakecdp.features.config import RfmConfig
    from lakecdp.features.rfm import rfm
    from lakecdp.identity.stable_ids import assign_customer_ids
    from lakecdp.segments.evaluate import resolve_events

    empty = spark.createDataFrame([], "x string")
    as_of = datetime(2026, 11, 1, tzinfo=timezone.utc)
    calls = {
        "features": lambda: rfm(empty, as_of=as_of, config=RfmConfig()),
        "identity": lambda: assign_customer_ids(empty, None, run_id="r", as_of=as_of, id_prefix="cus_"),
        "segments": lambda: resolve_events(empty, empty),
    }
    for stage, call in calls.items():
        with pytest.raises(MissingColumnsError, match=r"is missing columns \["):
            call()


def test_commit_metadata_is_a_write_option_not_a_session_setting(spark, project):
    key = "spark.databricks.delta.commitInfo.userMetadata"
    tables = Tables(project)
    frame = spark.createDataFrame([("a",)], "v string")
    tables.overwrite(frame, "ops.metadata_probe", user_metadata="fingerprint-1")
    tables.overwrite(frame, "ops.metadata_probe")
    assert spark.conf.get(key, None) is None
    history = DeltaTable(str(project.warehouse / "ops" / "metadata_probe")).history()
    assert [h.get("userMetadata") for h in sorted(history, key=lambda h: h["version"])] == ["fingerprint-1", None]


def test_an_arrow_table_is_checked_the_same_way():
    import pyarrow as pa

    orders = pa.table({"order_id": ["o1"], "total": [1.0]})
    with pytest.raises(MissingColumnsError) as caught:
        require_columns(orders, ["order_id", "customer_id"], what="orders")
    assert str(caught.value) == "orders is missing columns ['customer_id']; it has ['order_id', 'total']"
    require_columns(orders, ["total"], what="orders")  # nothing missing: no error
    with pytest.raises(TypeError, match="orders must be a DataFrame or an Arrow table, got dict"):
        require_columns({"order_id": []}, ["order_id"], what="orders")
