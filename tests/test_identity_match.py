"""Identity matching: deterministic edges, the Splink model on both backends, guarded clustering.

The Splink model is trained once per module (DuckDB) on a small synthetic background of
households; every assertion is about hand-written records whose expected outcome sits
next to them. make test runs the matcher on the duckdb path's Arrow records
(:mod:`lakecdp.identity.local`, no Spark job); the full suite also runs each such test's
twin on Spark frames (``*_spark_frames``, ``[spark]``).
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyspark.testing import assertDataFrameEqual

from lakecdp.config import ConfigError, validate
from lakecdp.identity.clustering import cluster_arrow, cluster_edges
from lakecdp.identity.config import IdentityConfig, load_identity_config
from lakecdp.identity.deterministic import EDGE_SCHEMA, deterministic_edges
from lakecdp.identity.local import LocalRecords, kept_edges_local
from lakecdp.identity.matching import ProbabilisticMatcher
from lakecdp.identity.model_store import ModelMismatchError

REPO_ROOT = Path(__file__).resolve().parents[1]

RECORD_SCHEMA = (
    "record_id string, source string, first_name string, last_name string, email string, "
    "phone string, date_of_birth date, address_line1 string, postcode string, city string, "
    "country string, device_ids array<string>, crm_id string, customer_number string"
)


def rec(record_id, first, last, email, phone, dob, street, postcode, *, devices=(), crm=None, shop=None):
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
        "Leeds",
        "GB",
        list(devices),
        crm,
        shop,
    )


# -- a small synthetic background for training (not asserted on) --------------------------
_FIRST = [
    ("William", "Bill"),
    ("Robert", "Bob"),
    ("Elizabeth", "Liz"),
    ("Margaret", "Peggy"),
    ("James", "Jim"),
    ("Katherine", "Kate"),
    ("Thomas", "Tom"),
    ("Susan", "Sue"),
    ("Michael", "Mike"),
    ("Rebecca", "Becky"),
    ("Daniel", "Dan"),
    ("Olivia", None),
    ("Hannah", None),
    ("Lukas", None),
    ("Aoife", None),
    ("Peter", "Pete"),
    ("Sarah", None),
    ("George", None),
    ("Emily", "Emmy"),
    ("Oscar", None),
    ("Grace", None),
    ("Isla", None),
    ("Noah", None),
    ("Ruby", None),
    ("Chloe", None),
    ("Mia", None),
    ("Freya", None),
]
_LAST = [
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Walker",
    "Murphy",
    "Kelly",
    "Schmidt",
    "Patel",
    "Khan",
    "Wright",
    "Hughes",
    "Green",
    "Turner",
    "Baker",
    "Cooper",
    "Fischer",
    "Byrne",
]
_STREETS = ["High Street", "Church Road", "Station Road", "Park Lane", "Mill Lane", "Kings Avenue"]


def background(households: int, seed: int = 7) -> list[tuple]:
    rng = random.Random(seed)
    rows, counter = [], 0
    for h in range(households):
        last = rng.choice(_LAST)
        street = f"{rng.randint(1, 200)} {rng.choice(_STREETS)}"
        postcode = f"YO{rng.randint(1, 20)} {rng.randint(1, 9)}{rng.choice('ABDEFGH')}{rng.choice('JLNPQRST')}"
        phone = f"+4477009{rng.randint(10000, 99999)}"
        size = rng.choice([1, 1, 2, 2, 3, 4])
        family_email = f"{last.lower()}.family{h}@mail.com" if size > 1 and rng.random() < 0.5 else None
        for first, nick in rng.sample(_FIRST, size):
            counter += 1
            dob = date(1950, 1, 1) + timedelta(days=rng.randint(0, 365 * 55))
            email = family_email or f"{first.lower()}.{last.lower()}{counter}@mail.com"
            for source in rng.sample(["crm", "shop", "tp"], rng.choice([1, 2, 2, 3])):
                f, lst, e, p, d = first, last, email, phone, dob
                r = rng.random()
                if r < 0.12 and nick:
                    f = nick
                elif r < 0.2:
                    i = rng.randrange(1, len(f) - 1)
                    f = f[:i] + f[i + 1] + f[i] + f[i + 2 :]
                if rng.random() < 0.1:
                    e = f"{first[0].lower()}{last.lower()}{counter}@other.com"
                if source == "tp":
                    e, p = None, None
                rows.append(rec(f"bg{source}:{counter}", f, lst, e, p, d, street, postcode))
    return rows


# -- hand-written records with known outcomes ---------------------------------------------
HOUSEHOLD = [
    # the Berg siblings: same surname, address, phone and family email; different people
    rec("crm:B1", "Tom", "Berg", "bergs@home.net", "+447700900201", date(1990, 4, 2), "7 Elm Road", "LS6 2AB"),
    rec("shop:B2", "Tina", "Berg", "bergs@home.net", "+447700900201", date(1993, 9, 17), "7 Elm Road", "LS6 2AB"),
    # William Hartley across three sources: nickname in shop, typo and no contact in third party
    rec(
        "crm:H1",
        "William",
        "Hartley",
        "w.hartley@post.com",
        "+447700900301",
        date(1971, 3, 4),
        "22 Oak Avenue",
        "LS8 1CD",
    ),
    rec("shop:H2", "Bill", "Hartley", "w.hartley@post.com", None, date(1971, 3, 4), "22 Oak Ave", "LS8 1CD"),
    rec("tp:H3", "Wiliam", "Hartley", None, None, date(1971, 3, 4), "22 Oak Avenue", "LS81CD"),
    # his daughter at the same address, same phone: a different customer
    rec(
        "shop:H4",
        "Emily",
        "Hartley",
        "emily.h@post.com",
        "+447700900301",
        date(2001, 6, 30),
        "22 Oak Avenue",
        "LS8 1CD",
    ),
]


@pytest.fixture(scope="module")
def config() -> IdentityConfig:
    return load_identity_config(REPO_ROOT / "conf")


def arrow_records(rows: list[tuple]) -> pa.Table:
    """``rows`` (of :data:`RECORD_SCHEMA`) as an Arrow table: the duckdb path's input, no Spark."""
    from lakecdp.delta_store import arrow_schema

    schema = arrow_schema(RECORD_SCHEMA)
    return pa.Table.from_pylist([dict(zip(schema.names, row, strict=True)) for row in rows], schema=schema)


# make test's model: the background and the household as Arrow, prepared and matched in DuckDB
# (lakecdp.identity.local, as the identity job runs the duckdb backend), trained once per module
@pytest.fixture(scope="module")
def local_records(config) -> LocalRecords:
    return LocalRecords(arrow_records(background(45) + HOUSEHOLD), config)


@pytest.fixture(scope="module")
def trained_local(config, local_records, tmp_path_factory):
    """One model trained on the Arrow records for the whole module: (matcher, model path)."""
    matcher = ProbabilisticMatcher(config, spark=None, model_dir=tmp_path_factory.mktemp("models-local"))
    prepared = local_records.prepared()
    path = matcher.train(prepared, prepared=prepared)  # as predict_local trains a first model
    return matcher, path


def local_clusters(config, local: LocalRecords, *edges: pa.Table) -> list[dict]:
    """:func:`cluster_arrow` of ``local``'s records over ``edges`` (deterministic and
    probabilistic ``identity.edges`` rows), as the identity job clusters on the duckdb backend."""
    nodes = local.prepared().select(["record_id", "source"])
    columns = ["record_id_l", "record_id_r", "edge_type", "match_probability"]
    joined = pa.concat_tables([e.select(columns).cast(edges[0].select(columns).schema) for e in edges])
    return cluster_arrow(nodes, kept_edges_local(local.con, joined, nodes, config.edge_floor), config).to_pylist()


# the same records and model on Spark frames (ProbabilisticMatcher.predict and friends): the
# full suite's twins of the tests above (Spark jobs of 15-40 s on two loaded cores)
@pytest.fixture(scope="module")
def records(spark):
    return spark.createDataFrame(background(45) + HOUSEHOLD, RECORD_SCHEMA).cache()


@pytest.fixture(scope="module")
def trained(spark, config, records, tmp_path_factory):
    """One model trained with DuckDB on the Spark frame for the whole module: (matcher, model path)."""
    matcher = ProbabilisticMatcher(config, spark=spark, model_dir=tmp_path_factory.mktemp("models"))
    path = matcher.train(records)
    return matcher, path


def clusters_of(rows, ids):
    """record id -> frozenset of the hand-written ids in its cluster."""
    by_key: dict[str, set[str]] = {}
    for row in rows:
        if row["record_id"] in ids:
            by_key.setdefault(row["cluster_key"], set()).add(row["record_id"])
    return sorted(sorted(group) for group in by_key.values())


# The Spark path's deterministic edges (the spark backend's; 15-30 s on two loaded cores) are
# the full suite's: make test checks the duckdb backend's edges on hand-written records
# (test_identity_local's test_deterministic_edges_by_hand), the full suite both paths and
# their parity (test_identity_local's test_spark_and_duckdb_prepare_and_link_the_same_rows)
@pytest.mark.slow
def test_deterministic_edges_ignore_junk_and_over_shared_values(spark, config):
    records = spark.createDataFrame(
        [
            # same person twice: email (case/space variant) and phone shared -> one edge
            rec(
                "crm:1",
                "Anna",
                "Berg",
                "anna@x.com",
                "+447700900001",
                date(1990, 1, 2),
                "1 High St",
                "LS1 1AA",
                devices=["d-1"],
            ),
            rec(
                "shop:1",
                "Anna",
                "Berg",
                " ANNA@x.com",
                "+447700900001",
                date(1990, 1, 2),
                "1 High St",
                "LS1 1AA",
                devices=["d-1"],
            ),
            # a household phone used by two people -> reported, not linked
            rec("crm:2", "Tom", "Lund", None, "+447700900002", date(1992, 5, 6), "2 High St", "LS1 1AA"),
            rec("shop:2", "Tina", "Lund", None, "+447700900002", date(1995, 7, 8), "2 High St", "LS1 1AA"),
            # junk values shared by strangers -> ignored entirely
            rec("crm:3", "Xavier", "Yates", "test@test.com", "0000000000", date(1980, 1, 1), "3 Road", "LS2 2BB"),
            rec("shop:3", "Zoe", "Wood", "test@test.com", "0000000000", date(1981, 1, 1), "4 Road", "LS3 3CC"),
            # a nickname is the same person: Bill = William, same birth date, shared device
            rec("crm:4", "William", "Hale", None, None, date(1970, 2, 2), None, None, devices=["d-9"]),
            rec("web:4", "Bill", "Hale", None, None, date(1970, 2, 2), None, None, devices=["d-9", "d-10"]),
            # the same CRM id on two records
            rec("crm:5", "Ola", "Berg", None, None, None, None, None, crm="C0005"),
            rec("shop:5", "Ola", "Berg", None, None, None, None, None, crm="C0005"),
            # a web login (email and device only, no name or birth date) adds no "person":
            # it links to the one named person holding the email
            rec("crm:6", "Petra", "Sand", "petra@x.com", None, date(1985, 3, 3), None, None),
            rec("web:d-6", None, None, "petra@x.com", None, None, None, None, devices=["d-6"]),
        ],
        RECORD_SCHEMA,
    )
    edges, over_shared = deterministic_edges(records, config, run_id="run-1")
    assertDataFrameEqual(
        edges,
        spark.createDataFrame(
            [
                ("crm:1", "shop:1", "deterministic", "device_id,email,phone", 1.0, None, "run-1"),
                ("crm:4", "web:4", "deterministic", "device_id", 1.0, None, "run-1"),
                ("crm:5", "shop:5", "deterministic", "crm_id", 1.0, None, "run-1"),
                ("crm:6", "web:d-6", "deterministic", "email", 1.0, None, "run-1"),
            ],
            EDGE_SCHEMA,
        ),
    )
    assertDataFrameEqual(over_shared, [("phone", "+447700900002", 2, 2)])


HOUSEHOLD_CLUSTERS = [
    ["crm:B1"],
    ["crm:H1", "shop:H2", "tp:H3"],
    ["shop:B2"],
    ["shop:H4"],
]


def test_household_members_stay_apart_and_one_person_joins(config, local_records, trained_local):
    matcher, _ = trained_local
    det = local_records.deterministic_edges(run_id=None)
    prob = matcher.predict_local(local_records.prepared())
    rows = local_clusters(config, local_records, det, prob)
    assert clusters_of(rows, {r[0] for r in HOUSEHOLD}) == HOUSEHOLD_CLUSTERS
    hartley = {r["record_id"]: r for r in rows if r["record_id"] in {"crm:H1", "shop:H2", "tp:H3"}}
    assert {r["cluster_size"] for r in hartley.values()} == {3}
    assert all(r["link_confidence"] >= config.model.match_threshold for r in hartley.values())


@pytest.mark.slow  # the Spark-frame twin of the test above
def test_household_members_stay_apart_and_one_person_joins_spark_frames(spark, config, records, trained):
    matcher, _ = trained
    det, _ = deterministic_edges(records, config)
    prob = matcher.predict(records)
    rows = cluster_edges(records.select("record_id", "source"), det.unionByName(prob), config).collect()
    assert clusters_of(rows, {r[0] for r in HOUSEHOLD}) == HOUSEHOLD_CLUSTERS
    hartley = {r["record_id"]: r for r in rows if r["record_id"] in {"crm:H1", "shop:H2", "tp:H3"}}
    assert {r["cluster_size"] for r in hartley.values()} == {3}
    assert all(r["link_confidence"] >= config.model.match_threshold for r in hartley.values())


def pairs_of(edges: pa.Table) -> list[tuple]:
    """The edges' rows as sorted tuples (Arrow tables compare in row order)."""
    return sorted(tuple(row.values()) for row in edges.to_pylist())


def test_model_json_round_trip_and_versions(config, local_records, trained_local):
    matcher, path = trained_local
    assert path.name == "model_v1.json"
    meta = json.loads(path.with_name("model_v1.meta.json").read_text())
    assert (meta["version"], meta["backend"]) == (1, "duckdb")

    # a fresh matcher on the same folder loads v1 and predicts exactly the same pairs
    prepared = local_records.prepared()
    small = prepared.filter(pc.invert(pc.starts_with(prepared.column("record_id"), "bg")))
    assert small.num_rows == len(HOUSEHOLD)
    first = matcher.predict_local(small)
    reloaded = ProbabilisticMatcher(config, spark=None, model_dir=path.parent)
    assert reloaded.load().version == 1
    assert pairs_of(reloaded.predict_local(small)) == pairs_of(first)

    # the file is Splink's own model JSON: plain Splink, given the full-name frequencies of
    # the name shares saved with it (a lookup table, Splink's own API), scores the Hartley
    # pair the same
    from splink import DuckDBAPI, Linker

    from lakecdp.identity.frequencies import name_frequencies
    from lakecdp.identity.model_store import names_path

    db_api = DuckDBAPI()
    frame = db_api.register(small)
    plain = Linker(frame, str(path))
    names = {(r["full_name"], r["first_name"], r["last_name"]) for r in small.to_pylist() if r["full_name"]}
    lookup = db_api.register(pa.table(name_frequencies(sorted(names), json.loads(names_path(path).read_text()))))
    plain.table_management.register_term_frequency_lookup(lookup, "full_name")
    splink_pairs = plain.inference.predict().as_pandas_dataframe()
    ours = {(r["record_id_l"], r["record_id_r"]): r["match_probability"] for r in first.to_pylist()}
    theirs = {(row.record_id_l, row.record_id_r): row.match_probability for row in splink_pairs.itertuples()}
    assert ours[("crm:H1", "shop:H2")] == pytest.approx(theirs[("crm:H1", "shop:H2")])

    # a model trained for other comparisons is refused, not silently applied
    other = config.model_copy(
        update={"model": config.model.model_copy(update={"comparisons": config.model.comparisons[:2]})}
    )
    with pytest.raises(ModelMismatchError, match="another model configuration"):
        ProbabilisticMatcher(other, spark=None, model_dir=path.parent).load()


@pytest.mark.slow  # the Spark-frame twin of the test above (the model file's checks are frame-free)
def test_model_json_round_trip_and_versions_spark_frames(spark, config, records, trained):
    matcher, path = trained
    assert path.name == "model_v1.json"
    meta = json.loads(path.with_name("model_v1.meta.json").read_text())
    assert (meta["version"], meta["backend"]) == (1, "duckdb")
    small = records.where("record_id not like 'bg%'")
    first = matcher.predict(small)
    reloaded = ProbabilisticMatcher(config, spark=spark, model_dir=path.parent)
    assert reloaded.load().version == 1
    assertDataFrameEqual(reloaded.predict(small), first)


# new-vs-existing (William - Bill, Bill - Wiliam: same surname, birth date and address, first
# names neither nickname nor typo of each other) and new-vs-new (William - Wiliam) ...
HARTLEY_PAIRS = {("crm:H1", "shop:H2"), ("crm:H1", "tp:H3"), ("shop:H2", "tp:H3")}


def test_incremental_scores_only_pairs_with_new_records(config, local_records, trained_local):
    matcher, _ = trained_local
    new_ids = {"crm:H1", "tp:H3"}
    scored = matcher.predict_incremental_local(local_records.prepared(), pa.array(sorted(new_ids)))
    found = {(r["record_id_l"], r["record_id_r"]) for r in scored.to_pylist()}
    assert {p for p in found if not p[0].startswith("bg")} == HARTLEY_PAIRS
    # ... and never existing-vs-existing: the background's own duplicates are not rescored
    assert all(left in new_ids or right in new_ids for left, right in found)


@pytest.mark.slow  # the Spark-frame twin of the test above
def test_incremental_scores_only_pairs_with_new_records_spark_frames(spark, config, records, trained):
    matcher, _ = trained
    new_ids = {"crm:H1", "tp:H3"}
    existing = records.where("record_id not in ('crm:H1', 'tp:H3')")
    new = records.where("record_id in ('crm:H1', 'tp:H3')")
    found = {(r["record_id_l"], r["record_id_r"]) for r in matcher.predict_incremental(new, existing).collect()}
    assert {p for p in found if not p[0].startswith("bg")} == HARTLEY_PAIRS
    assert all(left in new_ids or right in new_ids for left, right in found)


def test_weak_link_is_split_or_flagged(spark, config):
    ids = spark.createDataFrame([(x,) for x in "ABCDEFGHIJK"], "record_id string")
    edges = spark.createDataFrame(
        [
            ("A", "B", "deterministic", "email", None, None, "r"),
            ("B", "C", "probabilistic", "dob", 0.999, 10.0, "r"),
            ("C", "D", "probabilistic", "dob", 0.96, 4.6, "r"),  # the only link: weak bridge
            ("D", "E", "probabilistic", "dob", 0.995, 7.6, "r"),
            # F-G-H: two weak edges between two strong parts -> not a single weak link
            ("F", "G", "probabilistic", "dob", 0.999, 10.0, "r"),
            ("F", "H", "probabilistic", "dob", 0.97, 5.0, "r"),
            ("G", "H", "probabilistic", "dob", 0.97, 5.0, "r"),
            ("H", "I", "probabilistic", "dob", 0.5, 0.0, "r"),  # below the match threshold
            # a single record on its one probable match: an ordinary pair, not a bridge
            ("J", "K", "probabilistic", "dob", 0.95, 4.3, "r"),
        ],
        EDGE_SCHEMA,
    )
    assertDataFrameEqual(
        cluster_edges(ids, edges, config),
        [
            ("A", "A", 3, 1.0, ["split_weak_link"]),
            ("B", "A", 3, 1.0, ["split_weak_link"]),
            ("C", "A", 3, 0.999, ["split_weak_link"]),
            ("D", "D", 2, 0.995, ["split_weak_link"]),
            ("E", "D", 2, 0.995, ["split_weak_link"]),
            ("F", "F", 3, 0.999, []),
            ("G", "F", 3, 0.999, []),
            ("H", "F", 3, 0.97, []),
            ("I", "I", 1, 1.0, []),
            ("J", "J", 2, 0.95, []),
            ("K", "J", 2, 0.95, []),
        ],
    )
    flag_only = config.model_copy(
        update={"clustering": config.clustering.model_copy(update={"weak_link_policy": "flag", "max_cluster_size": 4})}
    )
    assertDataFrameEqual(
        cluster_edges(ids, edges, flag_only).where("record_id in ('A', 'D', 'I')"),
        [
            ("A", "A", 5, 1.0, ["oversized", "weak_link"]),
            ("D", "A", 5, 0.995, ["oversized", "weak_link"]),
            ("I", "I", 1, 1.0, []),
        ],
    )


@pytest.mark.slow
def test_exclusive_merges_join_only_clusters_that_are_each_others_only_candidate():
    from lakecdp.identity.clustering import exclusive_merges

    sources = {
        # a-b: one candidate each: joined
        "a": {"crm", "shop"},
        "b": {"third_party"},
        # c has two candidates (d, e): apart
        "c": {"shop"},
        "d": {"third_party"},
        "e": {"third_party"},
        # f-g: a source in both: apart
        "f": {"shop"},
        "g": {"shop", "third_party"},
        # h-i: the edge is at or above the threshold (a weak link the guard cut): apart
        "h": {"shop"},
        "i": {"third_party"},
        # j-k: too big together: apart
        "j": {"shop"},
        "k": {"third_party"},
    }
    sizes = {key: len(value) for key, value in sources.items()} | {"j": 3, "k": 2}
    links = [
        ("a", "b", 0.90),
        ("b", "a", 0.85),
        ("c", "d", 0.90),
        ("c", "e", 0.82),
        ("f", "g", 0.90),
        ("h", "i", 0.97),
        ("j", "k", 0.90),
    ]
    assert exclusive_merges(links, sources, sizes, threshold=0.95, max_size=4) == {"a": "a", "b": "a"}


@pytest.mark.parametrize("backend", ["duckdb", pytest.param("spark", marks=pytest.mark.slow)])
def test_a_probable_link_joins_two_clusters_only_when_it_is_exclusive(spark, config, backend):
    # shop records without birth date and partner records without address share a name only:
    # S1-T1 alone (joined); S2 has two partner records of its name (apart); S3 and S4 are
    # two shop records of one name (T3 is no one's only candidate); C5+S5 already hold a
    # shop record, so a second shop record S6 stays apart
    chosen = config.with_backend(backend)
    ids = spark.createDataFrame(
        [
            ("S1", "shop"),
            ("T1", "tp"),
            ("S2", "shop"),
            ("T2a", "tp"),
            ("T2b", "tp"),
            ("S3", "shop"),
            ("S4", "shop"),
            ("T3", "tp"),
            ("C5", "crm"),
            ("S5", "shop"),
            ("S6", "shop"),
        ],
        "record_id string, source string",
    )
    edges = spark.createDataFrame(
        [
            ("S1", "T1", "probabilistic", "name", 0.91, 3.3, "r"),
            ("S2", "T2a", "probabilistic", "name", 0.91, 3.3, "r"),
            ("S2", "T2b", "probabilistic", "name", 0.90, 3.2, "r"),
            ("S3", "T3", "probabilistic", "name", 0.88, 2.9, "r"),
            ("S4", "T3", "probabilistic", "name", 0.88, 2.9, "r"),
            ("C5", "S5", "deterministic", "email", None, None, "r"),
            ("C5", "S6", "probabilistic", "name", 0.93, 3.7, "r"),
            ("T1", "T3", "probabilistic", "name", 0.5, 0.0, "r"),  # below the exclusive floor
        ],
        EDGE_SCHEMA,
    )
    assertDataFrameEqual(
        cluster_edges(ids, edges, chosen),
        [
            ("C5", "C5", 2, 1.0, []),
            ("S1", "S1", 2, 0.91, ["exclusive_link"]),
            ("S2", "S2", 1, 1.0, []),
            ("S3", "S3", 1, 1.0, []),
            ("S4", "S4", 1, 1.0, []),
            ("S5", "C5", 2, 1.0, []),
            ("S6", "S6", 1, 1.0, []),
            ("T1", "S1", 2, 0.91, ["exclusive_link"]),
            ("T2a", "T2a", 1, 1.0, []),
            ("T2b", "T2b", 1, 1.0, []),
            ("T3", "T3", 1, 1.0, []),
        ],
    )
    # off: the same edges join nothing below the match threshold; without sources likewise
    off = chosen.model_copy(
        update={"clustering": chosen.clustering.model_copy(update={"exclusive_link_probability": None})}
    )
    for frame, settings in ((ids, off), (ids.select("record_id"), chosen)):
        joined = cluster_edges(frame, edges, settings).where("cluster_size > 1").select("record_id").collect()
        assert sorted(r["record_id"] for r in joined) == ["C5", "S5"]


@pytest.mark.slow  # a Spark parity run (20-70 s): the full suite runs it, make test does not
def test_duckdb_and_spark_backends_give_the_same_clusters(spark, config, trained):
    matcher, path = trained
    # a small set: the Spark backend is slow on two cores
    small = spark.createDataFrame(background(6, seed=11) + HOUSEHOLD, RECORD_SCHEMA).cache()
    det, _ = deterministic_edges(small, config)
    results = {}
    for backend in ("duckdb", "spark"):
        chosen = config.with_backend(backend)
        applied = ProbabilisticMatcher(chosen, spark=spark, model_dir=path.parent)
        edges = det.unionByName(applied.predict(small))
        rows = cluster_edges(small.select("record_id", "source"), edges, chosen).collect()
        results[backend] = sorted(
            (r["record_id"], r["cluster_key"], r["cluster_size"], tuple(r["flags"])) for r in rows
        )
    assert results["spark"] == results["duckdb"]
    hartley = [r for r in results["spark"] if r[0] in ("crm:H1", "shop:H2", "tp:H3")]
    assert hartley == [("crm:H1", "crm:H1", 3, ()), ("shop:H2", "crm:H1", 3, ()), ("tp:H3", "crm:H1", 3, ())]


# the spark backend only (7-17 s): the full suite's, beside test_identity_local's
# test_both_backends_write_the_same_identity_tables (two spark-backend runs in one session)
@pytest.mark.slow
def test_two_spark_backend_runs_share_one_session(spark, config, trained):
    # each run registers its records as Spark temp views, which live as long as the session:
    # the second run used to fail with "Table 'lakecdp_records_1' already exists"
    from lakecdp.identity.prepare import prepare_for_matching

    matcher, path = trained
    prepared = prepare_for_matching(spark.createDataFrame(HOUSEHOLD, RECORD_SCHEMA), config)
    chosen = config.with_backend("spark")
    counts = []
    for _ in range(2):
        run = ProbabilisticMatcher(chosen, spark=spark, model_dir=path.parent)
        _, backend, registered = run.linker(prepared)
        assert backend.name == "spark"
        counts.append(registered.as_spark_dataframe().count())
    assert counts == [len(HOUSEHOLD), len(HOUSEHOLD)]


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"identity.yaml: model: .*unknown columns \['surname'\]"):
        validate(
            {"version": 1, "model": {"blocking_rules": [["surname"]]}},
            IdentityConfig,
            source="conf/identity.yaml",
        )
    with pytest.raises(ConfigError, match=r"clustering.weak_link_policy"):
        validate({"version": 1, "clustering": {"weak_link_policy": "merge"}}, IdentityConfig, source="x")


def test_the_u_sample_scales_with_the_records_between_floor_and_cap():
    from lakecdp.identity.config import TrainingSettings
    from lakecdp.identity.training import u_sample_size

    training = TrainingSettings(u_pairs_per_record=100, min_pairs_for_u=500_000, max_pairs_for_u=2_000_000)
    assert u_sample_size(training, 1_000) == 500_000  # the floor
    assert u_sample_size(training, 12_345) == 1_234_500
    assert u_sample_size(training, 50_000) == 2_000_000  # the cap
    shipped = load_identity_config(REPO_ROOT / "conf").model.training
    assert u_sample_size(shipped, 5_000) == 200_000
    assert u_sample_size(shipped, 20_000) == 800_000


@pytest.mark.parametrize("frames", ["arrow", pytest.param("spark", marks=pytest.mark.slow)])
def test_the_prior_rule_share_counts_same_name_pairs_with_a_birth_date_on_both_sides(request, config, frames):
    """A source without birth dates: of the three same-name pairs of Orla Fitzgerald only
    the CRM-CRM one can satisfy the prior rule [first_name, last_name, dob]."""
    from lakecdp.identity.training import populated_share

    rows = [
        rec("crm:P1", "Orla", "Fitzgerald", None, None, date(1990, 6, 1), "14 Park Lane", "LS6 1RT"),
        rec("crm:P2", "Orla", "Fitzgerald", None, None, date(1990, 6, 1), None, None),
        rec("shop:P3", "Orla", "Fitzgerald", None, None, None, "14 Park Lane", "LS6 1RT"),
        rec("crm:P4", "Colm", "Byrne", None, None, date(1970, 1, 2), None, None),
    ]
    if frames == "arrow":
        prepared = LocalRecords(arrow_records(rows), config).prepared()
    else:
        prepared = _prepared(request.getfixturevalue("spark"), config, rows)
    assert populated_share(prepared, ["first_name", "last_name", "dob"]) == pytest.approx(1 / 3)
    assert populated_share(prepared, ["first_name", "last_name"]) == 1.0


# 17-21 s in make test (two workers on two cores): the full suite's tier
@pytest.mark.slow
def test_a_missing_surname_does_not_make_other_first_names_neutral(spark, config, records, trained):
    """``Jan Pinon`` and ``Hillary <no surname>``, same birth date and address: two people
    of one household as far as the evidence goes (two different first names). With the
    surname missing the name comparison used to be "nothing to compare" (weight 0), so
    birth date + address alone linked them at p 0.985. Both first names are there and
    differ, so the name must land on its "else" level, which counts against."""
    from lakecdp.identity.prepare import prepare_for_matching

    matcher, _ = trained
    pair = spark.createDataFrame(
        [
            rec("crm:P1", "Jan", "Pinon", None, None, date(1956, 5, 20), "232 Goat Hollow Rd", "LS7 3GH"),
            rec("shop:P2", "Hillary", None, None, None, date(1956, 5, 20), "232 Goat Hollow Rd", "LS7 3GH"),
        ],
        RECORD_SCHEMA,
    )
    both = records.unionByName(pair)
    assert matcher.predict(both).where("record_id_l like '%:P_' and record_id_r like '%:P_'").count() == 0
    linker, _, _ = matcher.linker(prepare_for_matching(both, config))
    rows = {r["record_id"]: r.asDict() for r in prepare_for_matching(pair, config).collect()}
    row = linker.inference.score_pair(rows["crm:P1"], rows["shop:P2"]).as_record_list()[0]
    # levels count down from the first non-null one; 0 is "else" (null would be -1)
    assert row["gamma_name"] == 0
    assert row["gamma_date_of_birth"] > 0 and row["gamma_address_contact"] > 0
    assert row["match_probability"] < config.model.match_threshold


@pytest.mark.parametrize("prepare", ["duckdb", pytest.param("spark", marks=pytest.mark.slow)])
def test_an_unparseable_birth_date_keeps_its_text_for_the_typo_level(spark, prepare):
    """FEBRL-style ``yyyyMMdd`` birth dates: ``19461302`` (month 13, a typo of 19460213 or
    19461202) does not parse, so ``date_of_birth`` is null; its text survives in
    ``date_of_birth_text`` and the matcher compares it as ``19461302``. A date that parsed
    keeps no text; a parsed date that fails a check (future) is not evidence either. The
    records are ingested by Spark once (as Arrow); make test prepares them on the duckdb path,
    the full suite on Spark as well."""
    from lakecdp.identity.prepare import prepare_for_matching
    from lakecdp.ingest.sources import load_sources
    from lakecdp.ingest.standardise import to_customer_records
    from lakecdp.ingest.validate import parse_and_validate

    source = load_sources(REPO_ROOT / "conf" / "benchmarks" / "febrl")["records"]
    header = "id,given_name,surname,street_number,address_1,address_2,suburb,postcode,state,date_of_birth"
    lines = [
        (2, "r1,kyle,rundle,107,greenhood place,willows,brighton,5074,nsw,19461302"),
        (3, "r2,kyle,rundle,107,greenhood place,willows,brighton,5074,nsw,19460213"),
        (4, "r3,kyle,rundle,107,greenhood place,,brighton,5074,nsw,20991231"),
    ]
    raw = spark.createDataFrame(
        [(t, "records/records.csv", n) for n, t in lines], "raw string, source_file string, line bigint"
    )
    checked = parse_and_validate(raw, source, header=header.split(","), as_of=date(2026, 11, 1))
    records = to_customer_records(checked, source, run_id="r", ingested_at=None)
    ingested = records.toArrow()
    rows = {r["source_record_id"]: r for r in ingested.to_pylist()}
    assert (rows["r1"]["date_of_birth"], rows["r1"]["date_of_birth_text"]) == (None, "19461302")
    assert (rows["r2"]["date_of_birth"], rows["r2"]["date_of_birth_text"]) == (date(1946, 2, 13), None)
    assert (rows["r3"]["date_of_birth"], rows["r3"]["date_of_birth_text"]) == (None, None)
    assert (rows["r1"]["address_line2"], rows["r1"]["region"]) == ("willows", "nsw")
    config = load_identity_config(REPO_ROOT / "conf")
    if prepare == "duckdb":
        prepared = LocalRecords(ingested, config).prepared().to_pylist()
    else:
        prepared = [r.asDict() for r in prepare_for_matching(records, config).collect()]
    dob = {r["record_id"]: r["dob"] for r in prepared}
    assert dob == {"records:r1": "19461302", "records:r2": "19460213", "records:r3": None}


# -- issue #11 causes: each has its test ------------------------------------------------------
def _prepared(spark, config, rows):
    from lakecdp.identity.prepare import prepare_for_matching

    return prepare_for_matching(spark.createDataFrame(rows, RECORD_SCHEMA), config)


# pairs of one person, each with the kind of damage that left it "never compared" when every
# blocking rule needed an exact birth date or an exact first + last name
UNBLOCKED_BEFORE = [
    # typo in the first name AND in the birth date
    (
        rec("crm:U1", "Nathan", "Okafor", None, None, date(1980, 3, 14), "5 Mill Lane", "LS2 7QT"),
        rec("shop:U1", "Nathas", "Okafor", None, None, date(1980, 3, 15), "5 Mill Lane", "LS2 7QT"),
    ),
    # no birth date on one side, surname mistyped
    (
        rec("crm:U2", "Wil", "Brennan", None, None, date(1975, 1, 2), "9 Kings Avenue", "YO1 4AB"),
        rec("tp:U2", "Wil", "Brenan", None, None, None, "9 Kings Ave", "YO1 4AB"),
    ),
    # a source without birth date and a source without address: the name is all they share
    (
        rec("shop:U3", "Orla", "Fitzgerald", None, None, None, "14 Park Lane", "LS6 1RT"),
        rec("tp:U3", "Orla", "Fitzgerald", None, None, date(1990, 6, 1), None, None),
    ),
    # first name typo, postcode typo, no birth date on one side
    (
        rec("crm:U4", "Amber", "Coulson", None, None, date(1995, 3, 20), "26 Whitfield Road", "3986"),
        rec("shop:U4", "Amberr", "Colson", None, None, None, "26 Whitfield Rd", "3968"),
    ),
    # swapped and one name mistyped, other birth date typo
    (
        rec("crm:U5", "Brydee", "Macphail", None, None, date(1984, 12, 11), "57 Tuthill Pl", "2234"),
        rec("shop:U5", "Macphail", "Brycdee", None, None, date(1984, 12, 1), "Tuthill Place", "2234"),
    ),
]


def test_every_kind_of_damaged_pair_is_a_candidate(spark, config):
    """Cause "never compared": each pair above shares at least one configured blocking rule."""
    from lakecdp.identity.benchmark import blocking_recall
    from lakecdp.identity.blocking import blocking_rules_sql

    rows = [r for pair in UNBLOCKED_BEFORE for r in pair]
    labels = spark.createDataFrame([(r[0], r[0].split(":")[1]) for r in rows], "record_id string, person_id string")
    prepared = _prepared(spark, config, rows)
    assert blocking_recall(prepared, labels, blocking_rules_sql(config)) == (5, 5)
    # the rules of the old default (exact birth date or exact full name) found only U3
    old = ["l.dob = r.dob", "l.first_name_canonical = r.first_name_canonical and l.last_name = r.last_name"]
    assert blocking_recall(prepared, labels, old) == (5, 1)


def _level(config, comparison: str, label: str) -> int:
    """The gamma Splink gives ``label`` in ``comparison`` (levels count down to 0 = else)."""
    from lakecdp.identity.comparisons import settings_creator

    settings = settings_creator(config, "duckdb").create_settings_dict("duckdb")
    levels = next(c for c in settings["comparisons"] if c["output_column_name"] == comparison)["comparison_levels"]
    scored = [lv for lv in levels if not lv.get("is_null_level")]
    labels = [lv.get("label_for_charts") for lv in scored]
    assert label in labels, labels
    return len(scored) - 1 - labels.index(label)


@pytest.mark.parametrize("frames", ["arrow", pytest.param("spark", marks=pytest.mark.slow)])
def test_typos_land_on_their_graded_levels(request, config, frames):
    """Cause "compared but scored low": a one-typo or transposed first name is its own level,
    not "different"; a one-digit postcode typo with the same street is "same address but one
    typo", not a different address; a first name one typo away with another surname
    (married) and a similar street with a near postcode have levels of their own."""
    cases = [
        # (left, right, comparison, expected level)
        (
            ("Wil", "Hartley", "22 Oak Avenue", "LS8 1CD"),
            ("Wli", "Hartley", "22 Oak Avenue", "LS8 1CD"),
            "name",
            "first name one typo / similar, same last name",
        ),
        (
            ("Nathan", "Okafor", "5 Mill Lane", "LS2 7QT"),
            ("Nathas", "Okafor", "5 Mill Lane", "LS2 7QT"),
            "name",
            "first name one typo / similar, same last name",
        ),
        (
            ("Amber", "Coulson", "26 Whitfield Road", "3986"),
            ("Amberr", "Whillas", "3 Whitfield Road", "3987"),
            "name",
            "similar first name, other last name",
        ),
        (
            ("Tom", "Rokobaro", "12 Herschell Circuit", "2272"),
            ("Tom", "Rokobaro", "12 Herschell Circuit", "2227"),
            "address_contact",
            "same address but one typo",
        ),
        (
            ("Darcy", "Webb", "511 Bywaters Pilace", "5014"),
            ("Darcy", "Webb", "15 Bywaters Pl", "5041"),
            "address_contact",
            "similar street, postcode or city close",
        ),
        # a nickname mistyped: "dannny" is one typo from "danny", a nickname of "daniel";
        # "eimly" a transposed "emily", whose nickname is "em"
        (
            ("Dannny", "Dunne", "4 Kings Road", "LS1 1AA"),
            ("Daniel", "Dunne", "4 Kings Road", "LS1 1AA"),
            "name",
            "nickname one typo, same last name",
        ),
        (
            ("Em", "Dunne", "4 Kings Road", "LS1 1AA"),
            ("Eimly", "Dunne", "4 Kings Road", "LS1 1AA"),
            "name",
            "nickname one typo, same last name",
        ),
        # ... but two names the nickname list knows, one typo apart, stay "other first name":
        # a household's Jo (Joanne) and Joe (Joseph), Ronald and Donald, not one name mistyped
        (
            ("Jo", "Dunne", "4 Kings Road", "LS1 1AA"),
            ("Joe", "Dunne", "4 Kings Road", "LS1 1AA"),
            "name",
            "same last name, other first name",
        ),
        (
            ("Ronald", "Cook", "141 Pearse St", "LS1 1AA"),
            ("Donald", "Cook", "141 Pearse St", "LS1 1AA"),
            "name",
            "same last name, other first name",
        ),
    ]
    rows = []
    for n, (left, right, _, _) in enumerate(cases):
        for side, (first, last, street, postcode) in (("l", left), ("r", right)):
            rows.append(rec(f"crm:T{n}{side}", first, last, None, None, date(1970, 1, 1), street, postcode))
    if frames == "arrow":  # the duckdb path's records (lakecdp.identity.local), no Spark
        matcher, _ = request.getfixturevalue("trained_local")
        prepared = {r["record_id"]: r for r in LocalRecords(arrow_records(rows), config).prepared().to_pylist()}
        linker, _, _ = matcher.linker(request.getfixturevalue("local_records").prepared())
    else:
        from lakecdp.identity.prepare import prepare_for_matching

        spark = request.getfixturevalue("spark")
        matcher, _ = request.getfixturevalue("trained")
        prepared = {r["record_id"]: r.asDict() for r in _prepared(spark, config, rows).collect()}
        linker, _, _ = matcher.linker(prepare_for_matching(request.getfixturevalue("records"), config))
    for n, (_, _, comparison, label) in enumerate(cases):
        scored = linker.inference.score_pair(prepared[f"crm:T{n}l"], prepared[f"crm:T{n}r"]).as_record_list()[0]
        assert scored[f"gamma_{comparison}"] == _level(config, comparison, label), (n, label)


def test_levels_never_seen_in_training_are_said_once_in_plain_words(caplog):
    """Cause "rough edges": Splink's per-level "unable to train m value" warnings (one per
    level and EM session on data without email or phone) become one plain info line."""
    import logging

    from lakecdp.identity.training import UnseenLevels

    splink_logger = logging.getLogger("splink.internals.expectation_maximisation")
    unseen = UnseenLevels()
    splink_logger.addFilter(unseen)
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(2):  # two EM sessions
                for level in ("same email or phone", "same address and contact"):
                    splink_logger.warning(
                        "Level %s on comparison address_contact not observed in dataset, unable to train m value", level
                    )
            unseen.report()
    finally:
        splink_logger.removeFilter(unseen)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    infos = [r.getMessage() for r in caplog.records if "training saw no matching pairs" in r.getMessage()]
    assert infos == [
        (
            "training saw no matching pairs at some comparison levels (expected when the data "
            "lacks those fields or those kinds of typo; they get the floor m value and carry "
            "little weight): address_contact: same address and contact, same email or phone"
        )
    ]


def test_a_model_mismatch_names_a_flag_the_identity_command_has(config, trained_local, tmp_path):
    """Cause "rough edges": the error says to run `lakecdp identity --retrain`, and that flag exists."""
    from lakecdp.cli import build_parser

    _, path = trained_local
    models = tmp_path / "m"
    models.mkdir()
    (models / "model_v1.json").write_text(path.read_text())
    (models / "model_v1.meta.json").write_text(json.dumps({"fingerprint": "0000000000000000"}))
    with pytest.raises(ModelMismatchError, match=r"`lakecdp identity --retrain`"):
        ProbabilisticMatcher(config, spark=None, model_dir=models).load()
    assert build_parser().parse_args(["identity", "--retrain"]).retrain is True


# the Spark path's edges (7-17 s): the full suite's; make test checks the same rule on the
# duckdb backend (tom@berg.net in test_identity_local's test_deterministic_edges_by_hand)
@pytest.mark.slow
def test_an_email_shared_with_a_source_without_birth_dates_still_links(spark, config):
    """Cause "a source without birth date": ``Bel Bird`` in the CRM (born 1961) and in a shop
    that never asks for a birth date share an email. Counting "people" by distinct (birth
    date, first name) made the undated record a second person, so the email looked shared
    by two and was never linked. An undated record whose first name a dated record of the
    value has is not another person; one with another first name still is (the household's
    other member keeps the value over-shared)."""
    records = spark.createDataFrame(
        [
            rec("crm:1", "Bel", "Bird", "isabel_bird@bt.com", None, date(1961, 1, 1), "176 High St", "BT9 9ZS"),
            rec("shop:1", "Bel", "Bird", " ISABEL_BIRD@bt.com", None, None, "176 High St", "BT9 9ZS"),
            rec("crm:2", "Ann", "Lowe", "lowes@home.net", None, date(1970, 4, 4), "3 Elm Rd", "LS6 2AB"),
            rec("shop:2", "Ann", "Lowe", "lowes@home.net", None, None, "3 Elm Rd", "LS6 2AB"),
            rec("shop:3", "Kit", "Lowe", "lowes@home.net", None, None, "3 Elm Rd", "LS6 2AB"),
        ],
        RECORD_SCHEMA,
    )
    edges, over_shared = deterministic_edges(records, config, run_id="r")
    assert [(e["record_id_l"], e["record_id_r"], e["rule"]) for e in edges.collect()] == [("crm:1", "shop:1", "email")]
    assertDataFrameEqual(over_shared, [("email", "lowes@home.net", 3, 2)])


def test_a_sharp_s_is_written_ss_in_names_on_both_paths(spark):
    import duckdb

    from lakecdp.identity.deterministic import normalised_name
    from lakecdp.identity.local import normalised_name_sql

    names = ["Weiß", "WEISS", "Strauß-Müller"]
    expected = ["weiss", "weiss", "strauss-muller"]
    assert [duckdb.execute(f"select {normalised_name_sql('?')}", [n]).fetchone()[0] for n in names] == expected
    frame = spark.createDataFrame([(n,) for n in names], "name string")
    assert [r[0] for r in frame.select(normalised_name(frame["name"])).collect()] == expected


def test_a_birth_date_text_that_is_no_calendar_date_is_neutral(spark):
    import duckdb

    from lakecdp.identity.comparisons import _calendar_date

    texts = [
        ("19560426", True),
        ("19800229", True),  # February 29th: kept (leap years are not checked)
        ("19880132", False),  # the 32nd
        ("19750230", False),  # February 30th
        ("19810431", False),  # April 31st
        ("19820500", False),  # day 0
        ("19901313", False),  # month 13
    ]
    sql = f"select {_calendar_date('dob')} from (select ? as dob)"
    assert [(t, duckdb.execute(sql, [t]).fetchone()[0]) for t, _ in texts] == texts
    frame = spark.createDataFrame([(t,) for t, _ in texts], "dob string")
    assert [(r[0], r[1]) for r in frame.selectExpr("dob", _calendar_date("dob")).collect()] == texts
