"""The duckdb backend's on-machine path (lakecdp.identity.local) against the Spark path.

Unit tests (no engine start) check the DuckDB SQL and the Python lookups on hand-written
records with the expected values next to them; the Spark tests put the same records
through both paths and compare every row, and run the whole identity job on each backend.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from lakecdp.identity.config import load_identity_config
from lakecdp.identity.local import LocalRecords, final_edges, junk_values, spark_soundex

REPO_ROOT = Path(__file__).resolve().parents[1]
RECORD_SCHEMA = (
    "record_id string, source string, first_name string, last_name string, email string, "
    "phone string, date_of_birth date, address_line1 string, postcode string, city string, "
    "country string, device_ids array<string>, crm_id string, customer_number string, "
    "date_of_birth_text string"
)
FIELDS = [f.split(" ")[0] for f in RECORD_SCHEMA.split(", ")]


def rec(
    record_id,
    first,
    last,
    *,
    email=None,
    phone=None,
    dob=None,
    street=None,
    postcode=None,
    city="Leeds",
    devices=None,
    crm=None,
    shop=None,
    dob_text=None,
):
    return (
        record_id,
        record_id.split(":")[0],
        first,
        last,
        email,
        phone,
        dob,
        street,
        postcode,
        city,
        "gb",
        devices,
        crm,
        shop,
        dob_text,
    )


# awkward inputs: accents, punctuation, tabs, street types, house numbers with letters,
# junk contact points, a raw birth date that did not parse, empty strings
TRICKY = [
    rec(
        "crm:1",
        "  Seán ",
        "O'Brien-Smith",
        email=" Sean@Example.COM ",
        phone="+44 (0)7700-900.123",
        dob=date(1980, 1, 2),
        street="12a  High Street.",
        postcode="ls6 2ab",
        crm="C-1",
    ),
    rec(
        "shop:1",
        "Bill",
        "Hartley",
        email="test@test.com",
        phone="0000000",
        dob=None,
        dob_text="1971-13-04",
        street="Flat 3, 22 Oak Avenue",
        postcode=" LS8-1CD",
        devices=["d1", " ", None],
        shop="S1",
    ),
    rec("tp:1", "Jo\tAnne", "", email="", phone="+447777777777", street="Straße 5", postcode="", city=" LEEDS "),
    rec("web:1", None, None, email="noreply@shop.de", devices=["d1", "d2"]),
    rec(
        "crm:2",
        "Kate",
        "Lee",
        email="kate@x.com",
        dob=date(1990, 5, 6),
        street="1 Court Rd",
        postcode="AB1 1AA",
        crm="C-2",
    ),
    rec(
        "shop:2",
        "Kate",
        "Lee",
        email="KATE@x.com ",
        dob=date(1990, 5, 6),
        street="1 Court Road",
        postcode="AB11AA",
        shop="S2",
    ),
    # the Berg household shares a phone: two people (different birth date and first name)
    rec("crm:3", "Tom", "Berg", phone="+447700900201", dob=date(1990, 4, 2)),
    rec("shop:3", "Tina", "Berg", phone="+447700900201", dob=date(1993, 9, 17)),
    # a shop without birth dates shares Tom's email: not one more person (same first name)
    rec("crm:4", "Tom", "Berg", email="tom@berg.net", dob=date(1990, 4, 2)),
    rec("shop:4", "Tom", "Berg", email="tom@berg.net"),
]


def arrow(rows) -> pa.Table:
    columns = list(zip(*rows))
    types = {"date_of_birth": pa.date32(), "device_ids": pa.list_(pa.string())}
    return pa.table({f: pa.array(list(c), types.get(f, pa.string())) for f, c in zip(FIELDS, columns)})


@pytest.fixture(scope="module")
def config():
    return load_identity_config(REPO_ROOT / "conf")


def by_id(table: pa.Table) -> dict[str, dict]:
    return {row["record_id"]: row for row in table.to_pylist()}


# -- unit: no engine -------------------------------------------------------------------------
def test_soundex_is_sparks_variant():
    # Spark: h and w are skipped without separating equal codes; vowels separate them
    assert spark_soundex("robert") == "R163"
    assert spark_soundex("rupert") == "R163"
    assert spark_soundex("ashcraft") == "A261"
    assert spark_soundex("pfister") == "P236"
    assert spark_soundex("tymczak") == "T522"
    assert spark_soundex("lee") == "L000"
    assert spark_soundex("o-brien smith") == "O165"
    assert spark_soundex("---") is None and spark_soundex(None) is None


def test_junk_values_of_the_shipped_rules(config):
    # conf/identity.yaml's lists and patterns: the ones without group references are searched
    # as one alternation, the repeated-digit one on its own; the verdicts are per value
    rules = {r.type: r for r in config.deterministic.identifiers}
    phones = [
        "+447777777123",  # seven sevens in a row
        "+447777771234",  # six only
        "+44000000",  # a country code, then zeros only
        "+1555000000",  # zeros after more than a country code
        "0000",
        "+4412345678",
        "+447700900123",
        "N/A",  # listed, whatever its case
    ]
    emails = ["Test@Test.com", "noreply@shop.de", "bob@example.org", "bob@mail.com", "abcd@mail.com", "abc@mail.com"]
    phone, email = rules["phone"], rules["email"]
    assert junk_values(phones, phone.junk_values, phone.junk_patterns) == [
        "+447777777123",
        "+44000000",
        "0000",
        "+4412345678",
        "N/A",
    ]
    assert junk_values(emails, email.junk_values, email.junk_patterns) == [
        "Test@Test.com",
        "noreply@shop.de",
        "bob@example.org",
        "abc@mail.com",
    ]
    # patterns that cannot share one regex (an inline flag not at its start) are searched apart
    assert junk_values(["ABC", "xyz", "q"], [], ["(?i)abc", "xy", "(?P<d>z)"]) == ["ABC", "xyz"]


def test_duckdb_databases_keep_to_the_configured_memory_and_spill_folder(config, tmp_path):
    from lakecdp.identity.backends import backend_for

    settings = config.duckdb.model_copy(update={"memory_limit": "64MB", "temp_directory": "scratch/duckdb"})
    resolved = config.model_copy(update={"duckdb": settings}).with_project_root(tmp_path)
    assert resolved.duckdb.temp_directory == str(tmp_path / "scratch" / "duckdb")
    splink_con = backend_for(resolved, None).db_api._con  # Splink's own connection
    records_con = LocalRecords(arrow(TRICKY), resolved).con
    for con in (splink_con, records_con):
        # 64 MB = 61.0 MiB as DuckDB shows it
        assert con.execute("select current_setting('memory_limit')").fetchone() == ("61.0 MiB",)
        # ~190 MB of strings in a 64 MB database: blocks go to a folder of its own under the spill folder
        con.execute("create temp table big as select md5(range::varchar) as s from range(3000000)")
        spill = Path(con.execute("select current_setting('temp_directory')").fetchone()[0])
        assert spill.parent == tmp_path / "scratch" / "duckdb"
        assert spill.name.startswith("lakecdp-duckdb-") and any(spill.iterdir())
        con.close()
        assert not spill.exists()  # DuckDB removes what it made


def test_a_memory_limit_that_is_no_size_is_a_config_error(config):
    from pydantic import ValidationError

    from lakecdp.identity.config import DuckDBSettings

    assert DuckDBSettings(memory_limit=" 40% ").memory_limit == "40%"
    with pytest.raises(ValidationError, match="memory_limit must be a size like '4GB'.*got 'plenty'"):
        DuckDBSettings(memory_limit="plenty")


def test_records_are_prepared_for_matching_by_hand(config):
    prepared = by_id(LocalRecords(arrow(TRICKY), config).prepared())
    sean = prepared["crm:1"]
    assert (sean["first_name"], sean["last_name"], sean["full_name"]) == ("sean", "obrien-smith", "sean obrien-smith")
    assert (sean["first_name_soundex"], sean["last_name_soundex"]) == ("S500", "O165")
    # an example.com address is junk; the phone loses spaces, brackets, dots and dashes
    assert (sean["email"], sean["phone"]) == (None, "+4407700900123")
    assert (sean["address_line1"], sean["street_number"], sean["street_name"]) == ("12a high st", "12a", "high st")
    assert (sean["postcode"], sean["city"], sean["country"], sean["dob"]) == ("LS62AB", "leeds", "GB", "19800102")
    bill = prepared["shop:1"]
    assert bill["first_name_canonical"] == "william"
    assert bill["first_name_variants"] == ["bill", "william"]
    assert bill["first_name_known"] is True
    # the birth date did not parse: its raw digits are kept for the typo level
    assert bill["dob"] == "19711304"
    # junk email and phone are no evidence
    assert (bill["email"], bill["phone"]) == (None, None)
    assert (bill["address_line1"], bill["street_number"], bill["street_name"]) == (
        "apt 3 22 oak ave",
        "3",
        "apt oak ave",
    )
    assert bill["postcode"] == "LS81CD"
    jo = prepared["tp:1"]
    # tabs are whitespace; empty strings are missing values
    assert (jo["first_name"], jo["last_name"], jo["full_name"], jo["email"]) == ("jo anne", None, None, None)
    assert jo["phone"] is None  # seven or more repeats of one digit: junk
    assert (jo["address_line1"], jo["street_number"], jo["street_name"], jo["postcode"]) == ("str 5", "5", "str", None)
    assert jo["city"] == "leeds" and jo["first_name_known"] is False
    kate = prepared["crm:2"]
    assert kate["first_name_variants"] == ["catherine", "kate", "katherine"]
    assert kate["first_name_family"] == [
        "cat",
        "catherine",
        "cathy",
        "kat",
        "kate",
        "katherine",
        "kathy",
        "katie",
        "kitty",
    ]
    assert prepared["crm:2"]["address_line1"] == prepared["shop:2"]["address_line1"] == "1 ct rd"


def test_deterministic_edges_by_hand(config):
    local = LocalRecords(arrow(TRICKY), config)
    edges = {
        (r["record_id_l"], r["record_id_r"], r["rule"], r["run_id"])
        for r in local.deterministic_edges(run_id="r1").to_pylist()
    }
    assert edges == {
        # kate@x.com after lower-casing and trimming (not sean@example.com: junk)
        ("crm:2", "shop:2", "email", "r1"),
        # device d1: a web login says nothing about who holds it, so it adds no person
        ("shop:1", "web:1", "device_id", "r1"),
        # tom@berg.net: the shop record without a birth date is Tom himself
        ("crm:4", "shop:4", "email", "r1"),
        # not the Bergs' phone (two people), not the junk test@test.com / 0000000
    }


def test_final_edges_drop_links_inside_a_unique_source_and_keep_run_ids(config):
    local = LocalRecords(arrow(TRICKY), config)
    probabilistic = pa.table(
        {
            "record_id_l": ["crm:3", "crm:3", "crm:1"],
            "record_id_r": ["crm:4", "shop:4", "shop:1"],
            "edge_type": ["probabilistic"] * 3,
            "rule": ["dob+last_name"] * 3,
            "match_probability": [0.99, 0.97, 0.96],
            "match_weight": [9.0, 7.0, 6.0],
            "run_id": ["r2"] * 3,
        }
    )
    previous = pa.table(
        {
            "record_id_l": ["crm:3", "crm:1"],
            "record_id_r": ["shop:4", "shop:1"],
            "edge_type": ["probabilistic"] * 2,
            "rule": ["dob+last_name"] * 2,
            "match_probability": [0.97, 0.5],
            "match_weight": [7.0, 1.0],
            "run_id": ["r1"] * 2,
        }
    )
    sources = arrow(TRICKY).select(["record_id", "source"])
    rows = final_edges(
        local.con,
        deterministic=local.deterministic_edges(run_id="r2"),
        probabilistic=probabilistic,
        sources=sources,
        unique=["crm"],
        previous=previous,
    ).to_pylist()
    assert sorted((r["record_id_l"], r["record_id_r"], r["run_id"]) for r in rows) == [
        # crm:3 - crm:4 is inside the unique CRM: dropped
        ("crm:1", "shop:1", "r2"),  # found again with another probability: this run's
        ("crm:2", "shop:2", "r2"),
        ("crm:3", "shop:4", "r1"),  # found again unchanged: keeps the run that found it
        ("crm:4", "shop:4", "r2"),
        ("shop:1", "web:1", "r2"),
    ]


# -- both paths on Spark ----------------------------------------------------------------------
def rows_of(table: pa.Table) -> list:
    return sorted(
        (tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in row.items()) for row in table.to_pylist()),
        key=repr,
    )


@pytest.mark.slow  # a Spark parity run (20-70 s): the full suite runs it, make test does not
def test_spark_and_duckdb_prepare_and_link_the_same_rows(spark, config):
    from lakecdp.identity.deterministic import deterministic_edges, identifier_values
    from lakecdp.identity.prepare import PREPARED_COLUMNS, prepare_for_matching

    from test_identity_match import HOUSEHOLD, background

    extra = [(*row, None) for row in background(20) + HOUSEHOLD]
    records = spark.createDataFrame(TRICKY + extra, RECORD_SCHEMA)
    local = LocalRecords(records.toArrow(), config)
    assert rows_of(local.prepared()) == rows_of(
        prepare_for_matching(records, config).select(*PREPARED_COLUMNS).toArrow()
    )
    assert rows_of(local.identifier_values()) == rows_of(identifier_values(records, config).toArrow())
    spark_edges, _ = deterministic_edges(records, config, run_id="r1")
    assert rows_of(local.deterministic_edges(run_id="r1")) == rows_of(spark_edges.toArrow())


def project_with_backend(tmp_path: Path, backend: str):
    from conftest import make_project

    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    identity = conf / "identity.yaml"
    identity.write_text(identity.read_text().replace("backend: duckdb", f"backend: {backend}"))
    project = make_project(tmp_path)
    return project.model_copy(update={"conf_dir": conf})


IDENTITY_OUTPUTS = (
    "identity.edges",
    "identity.id_map",
    "identity.identifiers",
    "identity.id_changes",
    "gold.customer_profile",
    "identity.state",
)


@pytest.mark.slow
def test_both_backends_write_the_same_identity_tables(spark, tmp_path):
    """The identity job on the same records with the same hand-written model, a first full
    run and a second one over new records: the duckdb backend (every table read and written
    with delta-rs: it runs without a SparkSession), the spark backend (all in Spark), and the
    duckdb backend continuing a warehouse the spark backend wrote, write identical edges, id
    map, id changes, identifiers, golden records and state; the clusters are the
    hand-expected ones and Spark reads every table delta-rs wrote."""
    from deltalake import DeltaTable

    from lakecdp.context import JobContext
    from lakecdp.identity.job import run_identity
    from conftest import make_project
    from test_identity_job import (
        AS_OF,
        BRIDGE,
        FIRST_LOAD,
        NEW_BOB,
        SILVER_SCHEMA,
        groups,
        minted,
        snapshot,
        write_hand_model,
    )

    def drop_temp_views():
        # the spark backend's Splink registers its records as temp views named per run
        # ("lakecdp_records_1"): a second run in one session must not meet the first's
        for table in spark.catalog.listTables():
            if table.isTemporary:
                spark.catalog.dropTempView(table.name)

    def first_run(project, backend):
        write_hand_model(project)
        spark_ctx = JobContext.create(project, spark, as_of=AS_OF, run_id="run-1")
        spark_ctx.tables.append(spark.createDataFrame(FIRST_LOAD, SILVER_SCHEMA), "silver.customer_records")
        # the duckdb backend gets no SparkSession at all: any Spark call would fail
        ctx = JobContext.create(project, None if backend == "duckdb" else spark, as_of=AS_OF, run_id="run-1")
        counts = run_identity(ctx, mode="full")
        drop_temp_views()
        assert (counts["records"], counts["customers"]) == (9, 6)
        ids, _ = snapshot(spark_ctx)
        assert groups(ids) == {
            frozenset({"crm:C1", "shop_customers:S1"}),
            frozenset({"crm:C2"}),
            frozenset({"shop_customers:S3"}),
            frozenset({"crm:C4", "third_party:T4"}),
            frozenset({"crm:C7", "shop_customers:S7"}),
            frozenset({"shop_customers:S8"}),
        }

    def second_run(project, backend):
        spark_ctx = JobContext.create(project, spark, as_of=AS_OF, run_id="run-2")
        spark_ctx.tables.append(spark.createDataFrame(NEW_BOB + BRIDGE, SILVER_SCHEMA), "silver.customer_records")
        ctx = JobContext.create(project, None if backend == "duckdb" else spark, as_of=AS_OF, run_id="run-2")
        counts = run_identity(ctx, mode="full")
        drop_temp_views()
        assert (counts["incremental"], counts["records"], counts["customers"], counts["id_changes"]) == (0, 11, 5, 1)
        ids, changes = snapshot(spark_ctx)
        eve, eve2, bob = minted("crm:C7"), minted("shop_customers:S8"), minted("crm:C2")
        assert ids["shop_customers:S2"] == bob
        assert ids["shop_customers:S8"] == ids["web_events:d9"] == eve
        assert ("run-2", "merge", eve2, eve, 1) in changes and len(changes) == 7
        found = {}
        for name in IDENTITY_OUTPUTS:
            frame = DeltaTable(spark_ctx.tables.location(name)).to_pandas()
            found[name] = set(frame.to_json(orient="records", lines=True, date_format="iso").splitlines())
            # whichever engine wrote it, Spark reads the same rows
            assert spark_ctx.tables.read(spark, name).count() == len(frame), (backend, name)
        return found

    tables = {}
    for backend in ("duckdb", "spark"):
        project = project_with_backend(tmp_path / backend, backend)
        first_run(project, backend)
        if backend == "spark":  # the duckdb backend continues a copy of what Spark wrote
            shutil.copytree(tmp_path / "spark", tmp_path / "spark-then-duckdb")
            continued = make_project(tmp_path / "spark-then-duckdb")
            continued = continued.model_copy(update={"conf_dir": tmp_path / "spark-then-duckdb" / "conf"})
            identity = continued.conf_dir / "identity.yaml"
            identity.write_text(identity.read_text().replace("backend: spark", "backend: duckdb"))
            tables["spark-then-duckdb"] = second_run(continued, "duckdb")
        tables[backend] = second_run(project, backend)
    assert tables["duckdb"] == tables["spark"]
    assert tables["spark-then-duckdb"] == tables["spark"]
    assert len(tables["duckdb"]["identity.state"]) == 2
    edges = DeltaTable(str(tmp_path / "duckdb" / "warehouse" / "identity" / "edges")).to_pandas()
    pairs = set(zip(edges["record_id_l"], edges["record_id_r"], edges["edge_type"]))
    # shared email (Ann, Bob, Eve: the smallest record id holds the value) and S8's phone
    assert {(left, right) for left, right, kind in pairs if kind == "deterministic"} == {
        ("crm:C1", "shop_customers:S1"),
        ("crm:C2", "shop_customers:S2"),
        ("crm:C7", "shop_customers:S7"),
        ("crm:C7", "web_events:d9"),
        ("shop_customers:S8", "web_events:d9"),
    }
    assert ("crm:C4", "third_party:T4", "probabilistic") in pairs
    # each delta-rs commit names the run that made it
    history = DeltaTable(str(tmp_path / "duckdb" / "warehouse" / "identity" / "id_map")).history()
    assert {h.get("userMetadata") for h in history} - {None} == {
        "lakecdp-identity append run-1",
        "lakecdp-identity merge run-2",
    }


def test_an_incremental_run_reclusters_what_an_exclusive_link_depends_on(config):
    # S1-T1 share only a name: one candidate each, joined. A second partner record of the
    # name (T2) arrives: S1 now has two candidates and all three stay apart in a full run;
    # the incremental scope must reach S1 and T1 over the edge below the match threshold
    import pyarrow as pa

    from lakecdp.identity.clustering import _cluster_in_memory
    from lakecdp.identity.local import affected_records_local

    sources = {"shop:S1": "shop", "tp:T1": "tp", "tp:T2": "tp"}

    def edges(rows):
        left, right, p = zip(*rows)
        return pa.table(
            {
                "record_id_l": list(left),
                "record_id_r": list(right),
                "edge_type": ["probabilistic"] * len(rows),
                "match_probability": list(p),
            }
        )

    def clusters(nodes, table):
        kept = [
            (left, right, p)
            for left, right, p in zip(
                *(table.column(c).to_pylist() for c in ("record_id_l", "record_id_r", "match_probability"))
            )
            if left in nodes and right in nodes and p >= config.edge_floor
        ]
        return {row[0]: (row[1], row[4]) for row in _cluster_in_memory(sorted(nodes), kept, config, sources)}

    before = edges([("shop:S1", "tp:T1", 0.90)])
    after = edges([("shop:S1", "tp:T1", 0.90), ("shop:S1", "tp:T2", 0.85)])
    first = clusters({"shop:S1", "tp:T1"}, before)
    assert first == {"shop:S1": ("shop:S1", ["exclusive_link"]), "tp:T1": ("shop:S1", ["exclusive_link"])}
    full = clusters(set(sources), after)
    assert full == {"shop:S1": ("shop:S1", []), "tp:T1": ("tp:T1", []), "tp:T2": ("tp:T2", [])}
    id_map = pa.table({"record_id": ["shop:S1", "tp:T1"], "customer_id": ["cus_1", "cus_1"]})
    scope = affected_records_local(["tp:T2"], after, before, id_map, config.edge_floor)
    assert scope == ["shop:S1", "tp:T1", "tp:T2"]
    assert clusters(set(scope), after) == full


def _clusters_arrow(
    nodes: dict[str, str], kept: list[tuple[str, str, float]], config, born: dict[str, date] | None = None
) -> pa.Table:
    from lakecdp.identity.clustering import cluster_arrow

    schema = pa.schema([("record_id_l", pa.string()), ("record_id_r", pa.string()), ("p", pa.float64())])
    edges = pa.Table.from_pylist([dict(zip(schema.names, e)) for e in kept], schema=schema)
    dates = None
    if born is not None:
        dates = pa.table(
            {
                "record_id": pa.array(list(born), pa.string()),
                "date_of_birth": pa.array(list(born.values()), pa.date32()),
            }
        )
    return cluster_arrow(pa.table({"record_id": list(nodes), "source": list(nodes.values())}), edges, config, dates)


def test_clusters_over_arrow_by_hand(config):
    # threshold 0.95, weak links below 0.99 split, exclusive links from 0.8 (conf/identity.yaml)
    nodes = {
        "b:2": "b", "a:1": "a", "a:3": "a", "b:4": "b",  # a strong pair + a weak bridge to another
        "c:5": "c", "c:6": "c",  # the strong pair on the other side of the bridge
        "a:7": "a", "b:8": "b",  # one probable link, nothing else: an exclusive link
        "a:9": "a",  # alone
    }  # fmt: skip
    kept = [
        ("a:1", "b:2", 1.0),
        ("a:1", "a:3", 0.999),
        ("b:2", "c:5", 0.96),
        ("c:5", "c:6", 1.0),
        ("a:3", "b:4", 0.97),
        ("a:7", "b:8", 0.85),
    ]
    rows = {r["record_id"]: r for r in _clusters_arrow(nodes, kept, config).to_pylist()}
    assert list(rows) == sorted(nodes)
    got = {r: (v["cluster_key"], v["cluster_size"], v["link_confidence"], v["flags"]) for r, v in rows.items()}
    assert got == {
        # b:4 hangs on a:3 by one probable link: no bridge between two groups
        "a:1": ("a:1", 4, 1.0, ["split_weak_link"]),
        "b:2": ("a:1", 4, 1.0, ["split_weak_link"]),
        "a:3": ("a:1", 4, 0.999, ["split_weak_link"]),
        "b:4": ("a:1", 4, 0.97, ["split_weak_link"]),
        "c:5": ("c:5", 2, 1.0, ["split_weak_link"]),
        "c:6": ("c:5", 2, 1.0, ["split_weak_link"]),
        "a:7": ("a:7", 2, 0.85, ["exclusive_link"]),
        "b:8": ("a:7", 2, 0.85, ["exclusive_link"]),
        "a:9": ("a:9", 1, 1.0, []),
    }
    assert rows["a:1"]["source"] == "a" and rows["c:6"]["source"] == "c"


@pytest.mark.parametrize("policy", ["flag", "split"])
@pytest.mark.parametrize("max_size", [2, 3, 50])
def test_clusters_over_arrow_equal_the_in_memory_guards(config, policy, max_size):
    # oracle: _cluster_in_memory, the guards as the Spark backend runs them, on random graphs
    import random

    from lakecdp.identity.clustering import _cluster_in_memory, cluster_table

    guards = config.clustering.model_copy(update={"weak_link_policy": policy, "max_cluster_size": max_size})
    varied = config.model_copy(update={"clustering": guards})
    for seed in range(150):
        rng = random.Random(seed)
        ids = [f"{rng.choice('abc')}:{i:03d}" for i in range(rng.randint(1, 40))]
        sources = {i: i.split(":")[0] for i in ids}
        pairs: dict[tuple[str, str], float] = {}
        for _ in range(rng.randint(0, 3 * len(ids))) if len(ids) > 1 else ():
            left, right = sorted(rng.sample(ids, 2))
            pairs[(left, right)] = rng.choice([0.8, 0.85, 0.95, 0.97, 0.99, 1.0, rng.uniform(0.8, 1.0)])
        kept = sorted((left, right, p) for (left, right), p in pairs.items())
        expected = cluster_table(_cluster_in_memory(ids, kept, varied, sources), sources=sources)
        assert _clusters_arrow(sources, kept, varied).equals(expected), seed
        # with the birth-date guard: a few dates far apart, one a typo of another, some records undated
        dates = [date(1960, 1, 2), date(1960, 1, 3), date(1985, 7, 9), date(2001, 12, 30)]
        born = {i: rng.choice(dates) for i in ids if rng.random() < 0.6}
        text = {i: d.strftime("%Y%m%d") for i, d in born.items()}
        expected = cluster_table(_cluster_in_memory(ids, kept, varied, sources, text), sources=sources)
        assert _clusters_arrow(sources, kept, varied, born).equals(expected), seed
