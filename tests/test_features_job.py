"""The features step end to end on real Delta tables: schema, point in time, idempotence, history."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pyspark.testing import assertDataFrameEqual

from lakecdp.context import JobContext
from lakecdp.features.compute import FEATURES_SCHEMA
from lakecdp.features.job import MissingInputError, _Log, run
from lakecdp.tables import Tables
from conftest import on_engine

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)


def t(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)


def _write_inputs(spark, tables: Tables) -> None:
    tables.append(
        spark.createDataFrame(
            [
                ("customer_number", "S1", "c1", "r0"),
                ("email", "ann@x.com", "c1", "r0"),
                ("device_id", "d-1", "c1", "r0"),
                ("email", "cat@x.com", "c2", "r0"),
            ],
            "identifier_type string, identifier_value string, customer_id string, run_id string",
        ),
        "identity.identifiers",
    )
    # c3 has a profile and nothing else
    tables.append(
        spark.createDataFrame([("c1", "Ann"), ("c3", "Cy")], "customer_id string, first_name string"),
        "gold.customer_profile",
    )
    tables.append(
        spark.createDataFrame(
            [("P1", "Shoe", "shoes", 30.0), ("P2", "Sock", "socks", 5.0)],
            "product_id string, name string, category string, price double",
        ),
        "silver.products",
    )
    tables.append(
        spark.createDataFrame(
            [
                # category missing on the event: filled from the catalog
                ("w1", "product_view", t("2026-10-30 00:00"), None, "d-1", None, "P1", None, None),
                ("m1", "email_open", t("2026-10-31 08:00"), "ann@x.com", None, None, None, None, None),
                ("w2", "add_to_cart", t("2026-10-31 20:00"), None, "d-1", None, "P2", None, 5.0),
                ("w3", "page_view", t("2026-10-31 21:00"), "nobody@x.com", None, None, None, None, None),
            ],
            "event_id string, event_type string, occurred_at timestamp, email string, "
            "device_id string, customer_number string, product_id string, category string, value double",
        ),
        "silver.events",
    )
    tables.append(
        spark.createDataFrame(
            [
                ("o1", "S1", "ann@x.com", t("2026-10-20 00:00"), "completed", 30.0),
                ("o2", "S9", "zed@x.com", t("2026-10-21 00:00"), "completed", 10.0),  # nobody we know
            ],
            "order_id string, customer_number string, email string, ordered_at timestamp, status string, total double",
        ),
        "silver.orders",
    )
    tables.append(
        spark.createDataFrame(
            [("o1", 1, "P1", None, 1, 30.0), ("o2", 1, "P2", None, 1, 10.0)],
            "order_id string, line_number int, product_id string, category string, quantity int, unit_price double",
        ),
        "silver.order_items",
    )


@pytest.mark.slow
def test_features_job_point_in_time_idempotent_with_history(spark, project):
    tables = Tables(project)
    with pytest.raises(
        MissingInputError, match=r"\['silver.events', 'silver.orders', 'silver.order_items', 'identity.identifiers'\]"
    ):
        run(JobContext.create(project, spark, as_of=AS_OF, run_id="r-missing"))
    _write_inputs(spark, tables)

    counts = run(JobContext.create(project, spark, as_of=AS_OF, run_id="r1"))
    assert counts == {"customers": 3, "events_unmatched": 1, "orders_unmatched": 1, "skipped": 0}
    no_orders = (None, 0, 0.0, None, None, None, None, 0.0, 0, None, None, None)
    no_engagement = (0, 0, 0, 0, 0, 0, None, None)
    # ... recommendations, recommendation_feedback (no feedback given)
    nothing_else = ({}, [], [], False, 0.0, [], None, [], [])
    first = spark.createDataFrame(
        [
            (
                "c1",
                AS_OF,
                # 12 days since the one completed order; 30.0 is below the first monetary bin
                12,
                1,
                30.0,
                5,
                1,
                1,
                "511",
                30.0,
                1,
                30.0,
                t("2026-10-20 00:00"),
                t("2026-10-20 00:00"),
                1,
                1,
                1,
                0,
                0,
                0,
                t("2026-10-31 08:00"),
                t("2026-10-31 20:00"),
                "new",
                {"shoes": 1.0},
                ["P1"],
                [],
                # the cart's last event is 4 hours old: abandoned
                True,
                5.0,
                ["P2"],
                t("2026-10-31 20:00"),
                [],
                [],
                "r1",
            ),
            ("c2", AS_OF, *no_orders, *no_engagement, "prospect", *nothing_else, "r1"),
            ("c3", AS_OF, *no_orders, *no_engagement, "prospect", *nothing_else, "r1"),
        ],
        FEATURES_SCHEMA,
    )
    assertDataFrameEqual(tables.read(spark, "gold.customer_features"), first)
    assert tables.version(spark, "gold.customer_features") == 0

    # same inputs, same as_of: nothing is written, not even a new Delta version
    again = run(JobContext.create(project, spark, as_of=AS_OF, run_id="r2"))
    assert again["skipped"] == 1
    assert tables.version(spark, "gold.customer_features") == 0

    # as of 25 October the view, the open, the cart and everything later have not happened yet
    run(JobContext.create(project, spark, as_of=t("2026-10-25 00:00"), run_id="r3"))
    assert tables.version(spark, "gold.customer_features") == 1
    assertDataFrameEqual(
        tables.read(spark, "gold.customer_features")
        .where("customer_id = 'c1'")
        .select(
            "as_of",
            "recency_days",
            "opens_90d",
            "last_activity_at",
            "lifecycle_stage",
            "category_affinities",
            "recent_product_views",
            "cart_open",
            "cart_product_ids",
            "run_id",
        ),
        spark.createDataFrame(
            [(t("2026-10-25 00:00"), 5, 0, None, "new", {"shoes": 1.0}, [], False, [], "r3")],
            "as_of timestamp, recency_days int, opens_90d int, last_activity_at timestamp, "
            "lifecycle_stage string, category_affinities map<string,double>, "
            "recent_product_views array<string>, cart_open boolean, cart_product_ids array<string>, "
            "run_id string",
        ),
    )
    # the 1 November state stays readable through Delta time travel
    assertDataFrameEqual(tables.read(spark, "gold.customer_features", version=0), first)


# ~26 s in make test on a loaded box (two workers): the full suite's tier
@pytest.mark.slow
def test_the_delta_log_reads_the_same_through_delta_rs_and_spark(spark, project):
    """engine: embedded asks delta-rs what the Spark engine asks Spark: whether a table exists,
    its version, and its last commit's userMetadata (the fingerprint) and output row count."""
    embedded = on_engine(project, "embedded")
    logs = {
        "spark": _Log(JobContext.create(project, spark, run_id="r1")),
        "embedded": _Log(JobContext.create(embedded, spark, run_id="r1")),
    }
    assert logs["embedded"].store is not None and logs["spark"].store is None
    name = "gold.customer_features"
    for log in logs.values():
        assert (log.exists(name), log.version(name), log.last_commit(name)) == (False, None, {})

    tables = Tables(project)
    rows = spark.createDataFrame([("c1",), ("c2",)], "customer_id string")
    tables.overwrite(rows, name, user_metadata="features:first")
    tables.overwrite(
        rows.union(spark.createDataFrame([("c3",)], "customer_id string")), name, user_metadata="features:second"
    )
    for engine, log in logs.items():
        commit = log.last_commit(name)
        assert (log.exists(name), log.version(name), commit["userMetadata"]) == (True, 1, "features:second"), engine
        assert int(commit["operationMetrics"]["numOutputRows"]) == 3, engine


def _embedded(project):
    return on_engine(project, "embedded")


def _write_inputs_with_delta_rs(project) -> None:
    """The hand-made inputs of tests/test_features_engines.py as Delta tables written by delta-rs."""
    import pyarrow as pa

    from lakecdp import catalog
    from lakecdp.delta_store import DeltaStore, arrow_schema
    from test_features_engines import INPUTS

    store = DeltaStore(JobContext.create(project, None, run_id="r0"), label="test")  # type: ignore[arg-type]
    for key, name in (
        ("events", catalog.EVENTS.name),
        ("orders", catalog.ORDERS.name),
        ("order_items", catalog.ORDER_ITEMS.name),
        ("products", catalog.PRODUCTS.name),
        ("identifiers", catalog.IDENTIFIERS.name),
        ("profiles", catalog.CUSTOMER_PROFILE.name),
    ):
        ddl, rows = INPUTS[key]
        given = arrow_schema(ddl).names
        full = arrow_schema(catalog.table(name).ddl)
        records = [dict(zip(given, row, strict=True)) for row in rows]
        if key == "order_items":  # a line number per order, as ingest gives
            for number, record in enumerate(records, start=1):
                record["line_number"] = number
        store.append(pa.Table.from_pylist(records, schema=full), name, catalog.table(name).ddl, run_id="r0")


def test_features_job_on_the_embedded_engine_needs_no_spark(project):
    """engine: embedded computes on DuckDB and writes with delta-rs (no Spark session at all): the
    hand-written rows, the fingerprint skip, a new as-of as a new version, time travel."""
    from lakecdp.delta_store import DeltaStore
    from test_features_engines import EXPECTED, EXPECTED_UNMATCHED, _rows, assert_rows

    project = _embedded(project)
    with pytest.raises(MissingInputError, match=r"\['silver.events', 'silver.orders'"):
        run(JobContext.create(project, None, as_of=AS_OF, run_id="r-missing"))  # type: ignore[arg-type]
    _write_inputs_with_delta_rs(project)
    store = DeltaStore(JobContext.create(project, None, run_id="r0"), label="test")  # type: ignore[arg-type]

    counts = run(JobContext.create(project, None, as_of=AS_OF, run_id="r1"))  # type: ignore[arg-type]
    assert counts == {
        "customers": 4,
        "events_unmatched": EXPECTED_UNMATCHED["events"],
        "orders_unmatched": EXPECTED_UNMATCHED["orders"],
        "skipped": 0,
    }
    assert_rows(_rows(store.read("gold.customer_features")), EXPECTED)
    # delta-rs creates the table (an empty version) and overwrites it in the next one
    first = store.version("gold.customer_features")
    assert store.last_user_metadata("gold.customer_features").startswith("features:")

    again = run(JobContext.create(project, None, as_of=AS_OF, run_id="r2"))  # type: ignore[arg-type]
    assert again["skipped"] == 1
    assert store.version("gold.customer_features") == first

    run(JobContext.create(project, None, as_of=t("2026-10-25 00:00"), run_id="r3"))  # type: ignore[arg-type]
    assert store.version("gold.customer_features") == first + 1
    earlier = {r["customer_id"]: r for r in _rows(store.read("gold.customer_features"))}
    # as of 25 October c1's cart, open and the views of the last week have not happened yet
    assert (earlier["c1"]["recency_days"], earlier["c1"]["opens_7d"], earlier["c1"]["cart_open"]) == (5, 0, False)
    assert earlier["c1"]["run_id"] == "r3"
    assert_rows(_rows(store.read("gold.customer_features", version=first)), EXPECTED)
