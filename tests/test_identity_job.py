"""The identity job end to end on a tiny hand-made silver.customer_records.

The Splink model is a hand-written model file (m and u per level, in the matcher's own
``model_v1.json`` format) so that which pairs link is decided here, not by EM on a dozen
records: identical name + birth date + address link strongly; the same name and birth date
with another address and contact do not.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, timezone

import pytest

from lakecdp.context import JobContext
from lakecdp.identity.config import load_identity_config
from lakecdp.identity.job import IdentityInputError, run_identity
from lakecdp.identity.comparisons import settings_creator

SILVER_SCHEMA = (
    "record_id string, source string, source_record_id string, first_name string, "
    "last_name string, email string, phone string, date_of_birth date, address_line1 string, "
    "postcode string, city string, country string, device_ids array<string>, crm_id string, "
    "customer_number string, email_consent boolean, updated_at timestamp, "
    "warnings array<string>, run_id string, ingested_at timestamp"
)
FIELDS = [f.split(" ")[0] for f in SILVER_SCHEMA.split(", ")]
AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)
IDENTITY_TABLES = (
    "identity.id_map",
    "identity.edges",
    "identity.identifiers",
    "gold.customer_profile",
    "identity.state",
)

# (m, u) per non-null level, in the order of the configured comparisons' levels
HAND_MODEL = {
    # exact, swapped, swapped with a typo, swapped with a nickname, nickname, first typo, last
    # typo, both similar, sound alike, initial, nickname with a typo, first same / similar with
    # last missing, last same / similar with first missing, same last other first, same first
    # other last, similar first other last, else
    "name": [
        (0.83, 0.0005),
        (0.02, 0.0001),
        (0.005, 0.0001),
        (0.004, 0.0001),
        (0.05, 0.0005),
        (0.03, 0.001),
        (0.02, 0.001),
        (0.01, 0.002),
        (0.005, 0.002),
        (0.002, 0.0005),
        (0.01, 0.0001),
        (0.002, 0.001),
        (0.001, 0.001),
        (0.002, 0.002),
        (0.001, 0.002),
        (0.002, 0.003),
        (0.001, 0.003),
        (0.001, 0.003),
        (0.02, 0.9793),
    ],
    # exact, one typo, day/month swapped, same month, two typos, else
    "date_of_birth": [(0.85, 0.002), (0.05, 0.01), (0.03, 0.001), (0.03, 0.01), (0.02, 0.01), (0.02, 0.967)],
    # address and contact points are one comparison (correlated evidence counted once):
    # address + contact, contact, address, address with a typo, street + number with postcode
    # or city close, street + number only, same street other number, similar street with
    # postcode or city close, postcode one typo in the same town, postcode, city, else
    "address_contact": [
        (0.5, 0.0002),
        (0.2, 0.002),
        (0.15, 0.003),
        (0.03, 0.0005),
        (0.01, 0.0005),
        (0.01, 0.001),
        (0.005, 0.002),
        (0.004, 0.001),
        (0.003, 0.002),
        (0.04, 0.002),
        (0.005, 0.02),
        (0.1, 0.9693),
    ],
}


def write_hand_model(project) -> None:
    config = load_identity_config(project.conf_dir)
    settings = settings_creator(config, "duckdb").create_settings_dict("duckdb")
    settings["probability_two_random_records_match"] = 0.001
    for comparison in settings["comparisons"]:
        levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
        for level, (m, u) in zip(levels, HAND_MODEL[comparison["output_column_name"]], strict=True):
            level["m_probability"], level["u_probability"] = m, u
    folder = project.path(config.models_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_v1.json").write_text(json.dumps(settings))


def person(
    record_id,
    first,
    last,
    dob,
    *,
    email=None,
    phone=None,
    street=None,
    postcode=None,
    devices=None,
    updated="2026-06-01",
):
    source, _, key = record_id.partition(":")
    row = dict(
        record_id=record_id,
        source=source,
        source_record_id=key,
        first_name=first,
        last_name=last,
        email=email,
        phone=phone,
        date_of_birth=dob,
        address_line1=street,
        postcode=postcode,
        city="Leeds" if postcode else None,
        country="GB" if postcode else None,
        device_ids=devices or [],
        crm_id=key if source == "crm" else None,
        customer_number=key if source == "shop_customers" else None,
        email_consent=True,
        updated_at=datetime.fromisoformat(updated),
        warnings=[],
        run_id="ingest-1",
        ingested_at=datetime(2026, 10, 1),
    )
    return tuple(row[f] for f in FIELDS)


FIRST_LOAD = [
    # Ann: crm + shop share an email -> deterministic (and probabilistic) link
    person("crm:C1", "Ann", "Lee", date(1980, 1, 1), email="ann@x.com", street="1 Oak Rd", postcode="AB1 1AA"),
    person(
        "shop_customers:S1", "Ann", "Lee", date(1980, 1, 1), email="ann@x.com", street="1 Oak Rd", postcode="AB1 1AA"
    ),
    person(
        "crm:C2",
        "Bob",
        "Stone",
        date(1975, 5, 5),
        email="bob@x.com",
        phone="+447700900002",
        street="2 Elm St",
        postcode="CD2 2BB",
    ),
    person(
        "shop_customers:S3", "Cara", "Diaz", date(1990, 9, 9), email="cara@x.com", street="3 Ash Ln", postcode="EF3 3CC"
    ),
    # Dan: no shared identifier, same name + birth date + address -> probabilistic link only
    person("crm:C4", "Dan", "Eze", date(1965, 6, 6), email="dan@x.com", street="4 Yew Cl", postcode="GH4 4DD"),
    person("third_party:T4", "Dan", "Eze", date(1965, 6, 6), street="4 Yew Cl", postcode="GH4 4DD"),
    # Eve again under her married name, with a new address and phone: not linked
    person("crm:C7", "Eve", "Fox", date(1985, 2, 2), email="eve@x.com", street="7 Fir Dr", postcode="JK7 7EE"),
    person(
        "shop_customers:S7", "Eve", "Fox", date(1985, 2, 2), email="eve@x.com", street="7 Fir Dr", postcode="JK7 7EE"
    ),
    person(
        "shop_customers:S8",
        "Eve",
        "Hill",
        date(1985, 2, 2),
        phone="+447700900008",
        street="80 Pine Ave",
        postcode="LM8 8FF",
    ),
]
# a new shop record of Bob (same email): joins Bob
NEW_BOB = [
    person(
        "shop_customers:S2",
        "Bob",
        "Stone",
        date(1975, 5, 5),
        email="bob@x.com",
        street="2 Elm St",
        postcode="CD2 2BB",
        updated="2026-10-01",
    )
]
# carries Eve's email (C7, S7) and S8's phone: bridges the two Eve customers
BRIDGE = [
    person(
        "web_events:d9",
        "Eve",
        "Hill",
        date(1985, 2, 2),
        email="eve@x.com",
        phone="+447700900008",
        devices=["d9"],
        updated="2026-10-15",
    )
]


def minted(min_record_id: str) -> str:
    text = f"{min_record_id}|2026-11-01T00:00:00.000000|"
    return "cus_" + hashlib.sha256(text.encode()).hexdigest()[:16]


def snapshot(ctx):
    """record_id -> customer_id, and the id_changes rows as sorted tuples."""
    tables, spark = ctx.tables, ctx.spark
    ids = {
        r["record_id"]: r["customer_id"]
        for r in tables.read(spark, "identity.id_map").select("record_id", "customer_id").collect()
    }
    changes = []
    if tables.exists(spark, "identity.id_changes"):
        changes = sorted(
            (r["run_id"], r["change_type"], r["old_customer_id"] or "", r["new_customer_id"], r["record_count"])
            for r in tables.read(spark, "identity.id_changes").collect()
        )
    return ids, changes


def table_rows(ctx) -> dict[str, set[str]]:
    """Every row of id_map, identifiers and customer_profile, read with delta-rs, as JSON."""
    from deltalake import DeltaTable

    rows = {}
    for name in ("identity.id_map", "identity.identifiers", "gold.customer_profile"):
        frame = DeltaTable(ctx.tables.location(name)).to_pandas()
        rows[name] = set(frame.to_json(orient="records", lines=True, date_format="iso").splitlines())
    return rows


def groups(ids: dict[str, str]) -> set[frozenset[str]]:
    by_customer: dict[str, set[str]] = {}
    for record, customer in ids.items():
        by_customer.setdefault(customer, set()).add(record)
    return {frozenset(records) for records in by_customer.values()}


@pytest.mark.slow
def test_full_then_incremental_runs_keep_ids_record_merges_and_match_a_full_run(spark, project):
    write_hand_model(project)

    def context(run_id):
        return JobContext.create(project, spark, as_of=AS_OF, run_id=run_id)

    ctx = context("run-1")
    ctx.tables.append(spark.createDataFrame(FIRST_LOAD, SILVER_SCHEMA), "silver.customer_records")

    # 1. first run: full
    counts = run_identity(ctx)
    assert (counts["incremental"], counts["records"], counts["customers"]) == (0, 9, 6)
    ids, changes = snapshot(ctx)
    assert groups(ids) == {
        frozenset({"crm:C1", "shop_customers:S1"}),
        frozenset({"crm:C2"}),
        frozenset({"shop_customers:S3"}),
        frozenset({"crm:C4", "third_party:T4"}),
        frozenset({"crm:C7", "shop_customers:S7"}),
        frozenset({"shop_customers:S8"}),
    }
    ann, bob, cara, dan = minted("crm:C1"), minted("crm:C2"), minted("shop_customers:S3"), minted("crm:C4")
    eve, eve2 = minted("crm:C7"), minted("shop_customers:S8")
    assert ids["shop_customers:S1"] == ann and ids["third_party:T4"] == dan
    assert changes == sorted(
        [
            ("run-1", "new", "", ann, 2),
            ("run-1", "new", "", bob, 1),
            ("run-1", "new", "", cara, 1),
            ("run-1", "new", "", dan, 2),
            ("run-1", "new", "", eve, 2),
            ("run-1", "new", "", eve2, 1),
        ]
    )
    edges = {
        (r["record_id_l"], r["record_id_r"], r["edge_type"]) for r in ctx.tables.read(spark, "identity.edges").collect()
    }
    assert ("crm:C4", "third_party:T4", "probabilistic") in edges
    assert ("crm:C1", "shop_customers:S1", "deterministic") in edges
    assert not {e for e in edges if "shop_customers:S8" in e[:2]}

    # 2. one new record of a known person: incremental, every id kept, no id change
    ctx = context("run-2")
    ctx.tables.append(spark.createDataFrame(NEW_BOB, SILVER_SCHEMA), "silver.customer_records")
    counts = run_identity(ctx)
    assert (counts["incremental"], counts["records_changed"], counts["id_changes"]) == (1, 1, 0)
    ids_2, changes_2 = snapshot(ctx)
    assert ids_2 == {**ids, "shop_customers:S2": bob}
    assert changes_2 == changes

    # 3. a record bridging the two Eve customers: merge, the two-record id survives
    ctx = context("run-3")
    ctx.tables.append(spark.createDataFrame(BRIDGE, SILVER_SCHEMA), "silver.customer_records")
    counts = run_identity(ctx)
    assert (counts["incremental"], counts["records_changed"], counts["id_changes"]) == (1, 1, 1)
    ids_3, changes_3 = snapshot(ctx)
    assert ids_3 == {**ids_2, "shop_customers:S8": eve, "web_events:d9": eve}
    assert changes_3 == sorted([*changes, ("run-3", "merge", eve2, eve, 1)])
    profile = ctx.tables.read(spark, "gold.customer_profile").where(f"customer_id = '{eve}'").first()
    assert profile["record_ids"] == ["crm:C7", "shop_customers:S7", "shop_customers:S8", "web_events:d9"]
    assert (profile["phones"], profile["device_ids"]) == (["+447700900008"], ["d9"])
    identifiers = {
        (r["identifier_type"], r["identifier_value"]): r["customer_id"]
        for r in ctx.tables.read(spark, "identity.identifiers").collect()
    }
    assert identifiers[("phone", "+447700900008")] == eve
    assert identifiers[("device_id", "d9")] == eve
    assert identifiers[("customer_number", "S2")] == bob

    # 3b. the bridging record is deleted: Eve splits again. Only her records are re-clustered;
    # the two-record part keeps her id, S8 gets a new one minted from its record and old id
    ctx = context("run-3b")
    ctx.tables.delta(spark, "silver.customer_records").delete("record_id = 'web_events:d9'")
    counts = run_identity(ctx)
    assert (counts["incremental"], counts["records_changed"], counts["id_changes"]) == (1, 1, 1)
    # C7, S7, S8 (Eve's customer) + d9 (deleted): nobody else is touched
    assert counts["records_rescoped"] == 4
    text = f"shop_customers:S8|2026-11-01T00:00:00.000000|{eve}"
    eve3 = "cus_" + hashlib.sha256(text.encode()).hexdigest()[:16]
    ids_3b, changes_3b = snapshot(ctx)
    expected_ids = {**ids_3, "shop_customers:S8": eve3}
    del expected_ids["web_events:d9"]
    assert ids_3b == expected_ids
    assert changes_3b == sorted([*changes_3, ("run-3b", "split", eve, eve3, 1)])
    identifiers = {
        (r["identifier_type"], r["identifier_value"]): r["customer_id"]
        for r in ctx.tables.read(spark, "identity.identifiers").collect()
    }
    assert identifiers[("phone", "+447700900008")] == eve3
    assert ("device_id", "d9") not in identifiers
    assert identifiers[("email", "eve@x.com")] == eve
    profiles = {r["customer_id"]: r["record_ids"] for r in ctx.tables.read(spark, "gold.customer_profile").collect()}
    assert profiles[eve] == ["crm:C7", "shop_customers:S7"]
    assert profiles[eve3] == ["shop_customers:S8"]
    assert profiles[bob] == ["crm:C2", "shop_customers:S2"] and len(profiles) == 6
    incremental_edges = {
        (r["record_id_l"], r["record_id_r"], r["edge_type"], r["rule"])
        for r in ctx.tables.read(spark, "identity.edges").collect()
    }
    incremental_rows = table_rows(ctx)

    # 4. a full run on the same data finds the same edges, clusters and ids: nothing changes,
    # not even a run stamp (so the incremental runs left every row as a full run would)
    ctx = context("run-4")
    counts = run_identity(ctx, mode="full")
    assert (counts["incremental"], counts["id_changes"]) == (0, 0)
    full_ids, full_changes = snapshot(ctx)
    assert full_ids == ids_3b and full_changes == changes_3b
    assert table_rows(ctx) == incremental_rows
    assert {
        (r["record_id_l"], r["record_id_r"], r["edge_type"], r["rule"])
        for r in ctx.tables.read(spark, "identity.edges").collect()
    } == incremental_edges

    # 5. nothing new: no Delta commit anywhere
    versions = {name: ctx.tables.version(spark, name) for name in IDENTITY_TABLES}
    counts = run_identity(context("run-5"))
    assert counts == {"records_changed": 0, "incremental": 1}
    assert {name: ctx.tables.version(spark, name) for name in IDENTITY_TABLES} == versions
    assert snapshot(ctx)[1] == changes_3b


# the job on the duckdb backend (conf/identity.yaml) reads silver with delta-rs, whoever wrote
# it: make test writes it with delta-rs too (no Spark job), the full suite with Spark as well
@pytest.mark.parametrize("writer", ["delta-rs", pytest.param("spark", marks=pytest.mark.slow)])
def test_missing_silver_and_impossible_incremental_are_clear_errors(request, project, writer):
    spark = request.getfixturevalue("spark") if writer == "spark" else None
    ctx = JobContext.create(project, spark, as_of=AS_OF, run_id="run-x")
    with pytest.raises(IdentityInputError, match="silver.customer_records does not exist yet"):
        run_identity(ctx)
    if spark is None:
        import pyarrow as pa

        from lakecdp.delta_store import DeltaStore, arrow_schema

        schema = arrow_schema(SILVER_SCHEMA)
        rows = pa.Table.from_pylist([dict(zip(FIELDS, row, strict=True)) for row in FIRST_LOAD[:1]], schema=schema)
        DeltaStore(ctx).append(rows, "silver.customer_records", SILVER_SCHEMA, run_id="run-x")
    else:
        ctx.tables.append(spark.createDataFrame(FIRST_LOAD[:1], SILVER_SCHEMA), "silver.customer_records")
    with pytest.raises(IdentityInputError, match="no previous identity run to continue"):
        run_identity(ctx, mode="incremental")


# slow tier: a Spark run of ~30-120 s on 2 loaded cores; the full suite (CI) runs it
@pytest.mark.slow
def test_a_pair_scores_the_same_whichever_record_is_new(spark, project):
    """Incremental runs score new records on the left, full runs the smaller id: every
    comparison must be symmetric. "Russell Dec" vs "Declan Russell" (from a 300k-person
    benchmark) was "swapped" one way only: Splink's ColumnsReversedLevel checks only
    l.first = r.last unless told to be symmetrical. "Russell Dan" vs "Declan Russell" is a
    swap of one part only ("dan" is no nickname of "declan")."""
    from lakecdp.identity.matching import ProbabilisticMatcher

    write_hand_model(project)
    config = load_identity_config(project.conf_dir)
    matcher = ProbabilisticMatcher(config, spark=spark, model_dir=project.path(config.models_dir))
    a = spark.createDataFrame(
        [
            person(
                "crm:C1", "Declan", "Russell", date(1986, 3, 8), email="d@x.de", street="1 Oak Rd", postcode="AB1 1AA"
            )
        ],
        SILVER_SCHEMA,
    )
    b = spark.createDataFrame(
        [person("crm:C2", "Russell", "Dec", date(1986, 3, 8), email="d@x.de", street="9 Elm St", postcode="CD2 2BB")],
        SILVER_SCHEMA,
    )
    c = spark.createDataFrame(
        [person("crm:C3", "Russell", "Dan", date(1986, 3, 8), email="d@x.de", street="9 Elm St", postcode="CD2 2BB")],
        SILVER_SCHEMA,
    )

    def scores(edges):
        return [(r["record_id_l"], r["record_id_r"], round(r["match_probability"], 12)) for r in edges.collect()]

    full = scores(matcher.predict(a.unionByName(b)))
    assert scores(matcher.predict_incremental(a, b)) == full
    assert scores(matcher.predict_incremental(b, a)) == full
    # swapped with the given name as a nickname ("dec" of "declan"). Odds by hand: prior
    # 0.001/0.999 x swapped nickname 0.004/0.0001 x same birth date 0.85/0.002 x same email
    # 0.2/0.002 = 1,701.7 -> p = 0.99941, the same either way
    assert [(left, right) for left, right, _ in full] == [("crm:C1", "crm:C2")]
    assert full[0][2] == pytest.approx(0.99941, abs=1e-5)

    full = scores(matcher.predict(a.unionByName(c)))
    assert scores(matcher.predict_incremental(a, c)) == full
    assert scores(matcher.predict_incremental(c, a)) == full
    # a one-sided "swap" (russell = russell, dan != declan) is no swap: the name counts against.
    # Odds by hand: prior 0.001/0.999 x name else 0.02/0.9793 x same birth date 0.85/0.002 x
    # same email 0.2/0.002 = 0.869 -> p = 0.46, below the 0.95 threshold: no edge either way
    # (read as a swap, 0.02/0.0001 instead, it would be p = 0.9999 on one side only)
    assert full == []


def test_link_only_drops_edges_inside_a_source_declared_unique(spark):
    """``unique_records: true`` on a source: its records link to other sources, never to
    each other (two CRM customers with one name and birth date are two people)."""
    from lakecdp.identity.job import without_links_inside

    records = spark.createDataFrame(
        [("crm:1", "crm"), ("crm:2", "crm"), ("shop:1", "shop"), ("shop:2", "shop")],
        "record_id string, source string",
    )
    edges = spark.createDataFrame(
        [
            ("crm:1", "crm:2", 0.99),  # inside the unique CRM: dropped
            ("crm:1", "shop:1", 0.99),  # across sources: kept
            ("shop:1", "shop:2", 0.99),  # inside a source not declared unique: kept
        ],
        "record_id_l string, record_id_r string, match_probability double",
    )
    kept = without_links_inside(edges, records, ["crm"])
    assert sorted((r[0], r[1]) for r in kept.collect()) == [("crm:1", "shop:1"), ("shop:1", "shop:2")]
    assert without_links_inside(edges, records, []) is edges
