"""Golden records: each survivorship rule on hand-made records, with provenance and arrays.

Every rule test runs on both implementations: Spark (:func:`golden_records`) and DuckDB over
Arrow (:func:`golden_records_local`, the duckdb backend), against the same hand-written rows.
"""

from __future__ import annotations

from datetime import date, datetime

import pytest

from lakecdp.config import ConfigError, validate
from lakecdp.identity.survivorship import SurvivorshipRules, golden_records, golden_records_local

RECORD_SCHEMA = (
    "record_id string, source string, first_name string, last_name string, email string, "
    "phone string, date_of_birth date, address_line1 string, postcode string, city string, "
    "country string, email_consent boolean, device_ids array<string>, updated_at timestamp"
)
FIELDS = [f.split(" ")[0] for f in RECORD_SCHEMA.split(", ")]


def records_df(spark, rows: list[dict]):
    return spark.createDataFrame([tuple(row.get(f) for f in FIELDS) for row in rows], RECORD_SCHEMA)


def id_map_df(spark, pairs: dict[str, str]):
    return spark.createDataFrame(list(pairs.items()), "record_id string, customer_id string")


def records_arrow(rows: list[dict]):
    import pyarrow as pa

    types = {
        "date_of_birth": pa.date32(),
        "email_consent": pa.bool_(),
        "device_ids": pa.list_(pa.string()),
        "updated_at": pa.timestamp("us", tz="UTC"),  # naive test times are UTC, as in Spark's session
    }
    return pa.table({f: pa.array([row.get(f) for row in rows], types.get(f, pa.string())) for f in FIELDS})


def _naive_utc(value):
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.replace(tzinfo=None) - (value.utcoffset() or (value - value))
    return value


@pytest.fixture(params=["spark", "duckdb"])
def engine(request):
    """Which implementation builds the profiles; Spark started only for its own cases."""
    return request.getfixturevalue("spark") if request.param == "spark" else None


def profiles(spark, rows, pairs, rules):
    """customer_id -> profile dict from Spark (``spark`` a session) or DuckDB (``spark`` None)."""
    if spark is None:
        import pyarrow as pa

        id_map = pa.table({"record_id": list(pairs), "customer_id": list(pairs.values())})
        result = golden_records_local(records_arrow(rows), id_map, rules, run_id="run-1")
        found = {}
        for row in result.to_pylist():
            row = {k: _naive_utc(v) for k, v in row.items()}
            row["provenance"] = dict(row["provenance"])  # Arrow maps come back as (key, value) pairs
            found[row["customer_id"]] = row
        return found
    result = golden_records(records_df(spark, rows), id_map_df(spark, pairs), rules, run_id="run-1")
    return {r["customer_id"]: r.asDict(recursive=True) for r in result.collect()}


def t(day: str) -> datetime:
    return datetime.fromisoformat(day)


def test_most_recent_with_address_group_arrays_and_provenance(engine):
    rules = SurvivorshipRules(attributes={})  # every attribute: most_recent
    rows = [
        dict(
            record_id="crm:1",
            source="crm",
            first_name="Ann",
            last_name="Lee",
            email="ann@old.com",
            phone="+447700900001",
            address_line1="1 High St",
            postcode="AB1 2CD",
            city="Leeds",
            country="GB",
            email_consent=True,
            updated_at=t("2026-01-01"),
        ),
        # newer, but without a street: its lone postcode must not join crm:1's street
        dict(
            record_id="shop_customers:1",
            source="shop_customers",
            first_name="Annie",
            email="ann@new.com",
            postcode="ZZ9 9ZZ",
            email_consent=False,
            device_ids=["d2", "d1"],
            updated_at=t("2026-06-01"),
        ),
        dict(
            record_id="web_events:d3",
            source="web_events",
            email="ann@new.com",
            device_ids=["d3", "d1"],
            updated_at=t("2026-07-01"),
        ),
        dict(record_id="crm:2", source="crm", last_name="Solo", updated_at=None),
    ]
    pairs = {"crm:1": "cus_1", "shop_customers:1": "cus_1", "web_events:d3": "cus_1", "crm:2": "cus_2"}
    got = profiles(engine, rows, pairs, rules)
    crm1 = {"record_id": "crm:1", "source": "crm"}
    shop1 = {"record_id": "shop_customers:1", "source": "shop_customers"}
    web3 = {"record_id": "web_events:d3", "source": "web_events"}
    assert got["cus_1"] == {
        "customer_id": "cus_1",
        "first_name": "Annie",
        "last_name": "Lee",
        "email": "ann@new.com",
        "phone": "+447700900001",
        "date_of_birth": None,
        "address_line1": "1 High St",
        "postcode": "AB1 2CD",
        "city": "Leeds",
        "country": "GB",
        "email_consent": False,
        "emails": ["ann@new.com", "ann@old.com"],
        "phones": ["+447700900001"],
        "device_ids": ["d1", "d2", "d3"],
        "record_ids": ["crm:1", "shop_customers:1", "web_events:d3"],
        "sources": ["crm", "shop_customers", "web_events"],
        "provenance": {
            "first_name": shop1,
            "last_name": crm1,
            "email": web3,
            "phone": crm1,
            "address_line1": crm1,
            "postcode": crm1,
            "city": crm1,
            "country": crm1,
            "email_consent": shop1,
        },
        "first_seen_at": t("2026-01-01"),
        "updated_at": t("2026-07-01"),
        "run_id": "run-1",
    }
    assert got["cus_2"]["last_name"] == "Solo"
    assert got["cus_2"]["provenance"] == {"last_name": {"record_id": "crm:2", "source": "crm"}}
    assert (got["cus_2"]["emails"], got["cus_2"]["device_ids"]) == ([], [])


def test_source_priority_prefers_listed_sources_then_recency(engine):
    rules = SurvivorshipRules(source_priority=["crm", "shop_customers"], attributes={"first_name": "source_priority"})
    rows = [
        # cus_1: crm wins although the others are newer
        dict(record_id="crm:1", source="crm", first_name="Ann", updated_at=t("2025-01-01")),
        dict(record_id="shop_customers:1", source="shop_customers", first_name="Annie", updated_at=t("2026-01-01")),
        dict(record_id="third_party:1", source="third_party", first_name="Anne", updated_at=t("2026-09-01")),
        # cus_2: a listed source beats an unlisted newer one
        dict(record_id="shop_customers:2", source="shop_customers", first_name="Bob", updated_at=t("2025-01-01")),
        dict(record_id="third_party:2", source="third_party", first_name="Robert", updated_at=t("2026-09-01")),
        # cus_3: crm has no first name, so the next source decides; within it the newest
        dict(record_id="crm:3", source="crm", first_name=None, updated_at=t("2026-09-01")),
        dict(record_id="shop_customers:3", source="shop_customers", first_name="Cat", updated_at=t("2025-01-01")),
        dict(record_id="shop_customers:4", source="shop_customers", first_name="Cathy", updated_at=t("2025-05-01")),
    ]
    pairs = {
        "crm:1": "cus_1",
        "shop_customers:1": "cus_1",
        "third_party:1": "cus_1",
        "shop_customers:2": "cus_2",
        "third_party:2": "cus_2",
        "crm:3": "cus_3",
        "shop_customers:3": "cus_3",
        "shop_customers:4": "cus_3",
    }
    got = profiles(engine, rows, pairs, rules)
    assert {c: (p["first_name"], p["provenance"]["first_name"]["record_id"]) for c, p in got.items()} == {
        "cus_1": ("Ann", "crm:1"),
        "cus_2": ("Bob", "shop_customers:2"),
        "cus_3": ("Cathy", "shop_customers:4"),
    }


def test_most_frequent_outvotes_a_newer_typo_and_ties_go_to_the_newest(engine):
    rules = SurvivorshipRules(attributes={"date_of_birth": "most_frequent"})
    rows = [
        dict(record_id="crm:1", source="crm", date_of_birth=date(1985, 3, 2), updated_at=t("2025-01-01")),
        dict(
            record_id="shop_customers:1",
            source="shop_customers",
            date_of_birth=date(1985, 3, 2),
            updated_at=t("2025-02-01"),
        ),
        dict(
            record_id="third_party:1", source="third_party", date_of_birth=date(1985, 2, 3), updated_at=t("2026-09-01")
        ),
        # nulls are no votes
        dict(record_id="web_events:d1", source="web_events", updated_at=t("2026-10-01")),
        dict(record_id="web_events:d2", source="web_events", updated_at=t("2026-10-01")),
        # cus_2: one vote each: the newest record's value
        dict(record_id="crm:2", source="crm", date_of_birth=date(1970, 1, 1), updated_at=t("2026-01-01")),
        dict(
            record_id="shop_customers:2",
            source="shop_customers",
            date_of_birth=date(1971, 1, 1),
            updated_at=t("2026-02-01"),
        ),
    ]
    pairs = {
        "crm:1": "cus_1",
        "shop_customers:1": "cus_1",
        "third_party:1": "cus_1",
        "web_events:d1": "cus_1",
        "web_events:d2": "cus_1",
        "crm:2": "cus_2",
        "shop_customers:2": "cus_2",
    }
    got = profiles(engine, rows, pairs, rules)
    assert {c: (p["date_of_birth"], p["provenance"]["date_of_birth"]["record_id"]) for c, p in got.items()} == {
        # both holders of the winning value agree; the newer of them is named
        "cus_1": (date(1985, 3, 2), "shop_customers:1"),
        "cus_2": (date(1971, 1, 1), "shop_customers:2"),
    }


def test_longest_then_newest_then_smallest_record_id(engine):
    rules = SurvivorshipRules(attributes={"first_name": "longest", "last_name": "most_recent"})
    same = t("2026-03-01")
    rows = [
        dict(record_id="crm:1", source="crm", first_name="William", updated_at=t("2024-01-01")),
        dict(record_id="shop_customers:1", source="shop_customers", first_name="Bill", updated_at=t("2026-01-01")),
        # cus_2: equal length -> newest
        dict(record_id="crm:2", source="crm", first_name="Jon", updated_at=t("2025-01-01")),
        dict(record_id="shop_customers:2", source="shop_customers", first_name="Joe", updated_at=t("2026-01-01")),
        # cus_3: equal length and time -> smallest record id, for both rules
        dict(
            record_id="shop_customers:3", source="shop_customers", first_name="Kim", last_name="Park", updated_at=same
        ),
        dict(record_id="crm:3", source="crm", first_name="Kit", last_name="Parks", updated_at=same),
    ]
    pairs = {
        "crm:1": "cus_1",
        "shop_customers:1": "cus_1",
        "crm:2": "cus_2",
        "shop_customers:2": "cus_2",
        "crm:3": "cus_3",
        "shop_customers:3": "cus_3",
    }
    got = profiles(engine, rows, pairs, rules)
    assert {c: (p["first_name"], p["last_name"]) for c, p in got.items()} == {
        "cus_1": ("William", None),
        "cus_2": ("Joe", None),
        "cus_3": ("Kit", "Parks"),
    }


def test_rules_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"identity.yaml: attributes.first_name: .*most_recent"):
        validate({"attributes": {"first_name": "newest"}}, SurvivorshipRules, source="conf/identity.yaml")
    with pytest.raises(ConfigError, match=r"\['postcode'\] listed in more than one group"):
        validate(
            {"groups": [["address_line1", "postcode"], ["postcode"]]}, SurvivorshipRules, source="conf/identity.yaml"
        )
