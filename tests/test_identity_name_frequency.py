"""Term-frequency weighting of an exact full name (lakecdp.identity.frequencies).

A rare full name matching exactly is strong evidence, a common one is not. The frequency
of a full name is the share of records with its first name times the share with its last
name (:func:`~lakecdp.identity.frequencies.name_frequencies`), not the share of records
with the whole name, which on a set of duplicates is mostly one person's own records.

No engine start: the records are prepared in DuckDB (lakecdp.identity.local) and scored by
Splink on DuckDB with a hand-written model, so every expected probability below is
worked out by hand from the numbers in it.
"""

from __future__ import annotations

import json
import string
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from lakecdp.identity.config import load_identity_config
from lakecdp.identity.local import LocalRecords
from lakecdp.identity.comparisons import settings_creator
from lakecdp.identity.frequencies import name_frequencies, name_shares_sql
from lakecdp.identity.matching import ProbabilisticMatcher
from lakecdp.identity.model_store import model_fingerprint

REPO_ROOT = Path(__file__).resolve().parents[1]
FIELDS = [
    "record_id",
    "source",
    "first_name",
    "last_name",
    "email",
    "phone",
    "date_of_birth",
    "address_line1",
    "postcode",
    "city",
    "country",
    "device_ids",
    "crm_id",
    "customer_number",
]
PRIOR = 0.0025


def rec(record_id, first, last, *, email=None, phone=None, dob=None, street=None, postcode=None, city=None):
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
        None,
        None,
        None,
    )


def arrow(rows) -> pa.Table:
    columns = list(zip(*rows))
    types = {"date_of_birth": pa.date32(), "device_ids": pa.list_(pa.string())}
    return pa.table({f: pa.array(list(c), types.get(f, pa.string())) for f, c in zip(FIELDS, columns)})


def letters(i: int) -> str:
    """A letters-only name unique to ``i`` (names keep letters only when normalised)."""
    return "q" + "".join(string.ascii_lowercase[int(d)] for d in f"{i:04d}")


# 200 records: 40 first names "john", 40 last names "smith", every other name on 1 or 2 records
SPECIAL = [
    # one person known to a shop (no birth date) and a partner (no address, no contact): only
    # the name is shared, and it is rare: 2 of 200 first names, 2 of 200 last names
    rec("shop:ottilie", "Ottilie", "Quarmby", email="oq@mail.net", street="4 Mill Lane", postcode="LS1 1AA"),
    rec("tp:ottilie", "Ottilie", "Quarmby", dob=date(1970, 3, 9)),
    # the same shape under the commonest name of the set: 40 Johns, 40 Smiths
    rec("shop:john", "John", "Smith", email="js@mail.net", street="9 Kirk Gate", postcode="LS2 2BB"),
    rec("tp:john", "John", "Smith", dob=date(1981, 6, 1)),
    # one person, a nickname in one source: the nickname level weighs by the name's rarity too
    rec("shop:bill", "Bill", "Tolputt", email="bt@mail.net", street="2 Bank St", postcode="LS4 4DD"),
    rec("tp:william", "William", "Tolputt", dob=date(1955, 2, 2)),
    # a household: one surname, one address and phone, other first names and birth dates
    rec("crm:anna", "Anna", "Berg", phone="+447700900777", dob=date(1960, 1, 1), street="7 Elm Rd", postcode="LS3 3CC"),
    rec(
        "crm:mark", "Mark", "Berg", phone="+447700900777", dob=date(1962, 12, 31), street="7 Elm Rd", postcode="LS3 3CC"
    ),
    # one person, the partner has the name swapped and the shop mistyped the first name: no
    # part equal in the same place, so only a rule on one swapped part makes them a pair
    rec("shop:cathernie", "Cathernie", "Scholz", email="cs@mail.net", street="3 North St", postcode="CB1 0JL"),
    rec("tp:scholz", "Scholz", "Catherine", dob=date(1964, 11, 19)),
    # the same shape under the commonest name of the set: two people, nothing but a name
    rec("shop:jhon", "Jhon", "Smith", email="jhs@mail.net", street="8 Kirk Gate", postcode="LS2 2BC"),
    rec("tp:smith", "Smith", "John", dob=date(1977, 4, 4)),
    # one person, both name parts mistyped on one side (one letter each)
    rec("shop:ysolde", "Ysolde", "Penhaligon", email="yp@mail.net", street="6 Quay St", postcode="TR1 2HE"),
    rec("tp:ysolda", "Ysolda", "Penhaligan", dob=date(1948, 8, 30)),
    # the same under the commonest name: a stranger to tp:john (John Smith)
    rec("shop:jonh", "Jonh", "Smiht", email="jns@mail.net", street="1 Kirk Gate", postcode="LS2 2BD"),
]
BACKGROUND = (
    [rec(f"crm:j{i}", "John", letters(i)) for i in range(38)]
    + [rec(f"crm:s{i}", letters(100 + i), "Smith") for i in range(37)]
    + [rec(f"crm:x{i}", letters(200 + i), letters(400 + i)) for i in range(110)]
)
RECORDS = SPECIAL + BACKGROUND


@pytest.fixture(scope="module")
def config():
    config = load_identity_config(REPO_ROOT / "conf")
    name = next(c for c in config.model.comparisons if c.kind == "name")
    assert name.term_frequency, "conf/identity.yaml ships the name comparison with term frequencies"
    return config


def hand_model(config, model_dir: Path) -> None:
    """A saved model with hand-chosen parameters: every level weighs nothing (m = u) but
    the few these tests read."""
    settings = settings_creator(config, "duckdb").create_settings_dict("duckdb")
    chosen = {
        # with term frequencies the level's own u cancels out: the weight is m / frequency
        ("name", "first and last name exact"): (0.9, 0.01),
        ("name", "nickname, same last name"): (0.05, 0.0005),
        ("name", "first and last name swapped, one typo / similar"): (0.02, 0.0002),
        ("name", "similar first and last name"): (0.01, 0.0001),
        ("name", "same last name, other first name"): (0.02, 0.004),
        ("date_of_birth", "All other comparisons"): (0.05, 0.95),
        ("address_contact", "same address and contact"): (0.6, 0.0005),
    }
    for comparison in settings["comparisons"]:
        for level in comparison["comparison_levels"]:
            if level.get("is_null_level"):
                continue
            key = (comparison["output_column_name"], level.get("label_for_charts"))
            level["m_probability"], level["u_probability"] = chosen.pop(key, (0.1, 0.1))
    assert not chosen, f"levels not found: {chosen}"
    settings["probability_two_random_records_match"] = PRIOR
    model_dir.mkdir(parents=True)
    (model_dir / "model_v1.json").write_text(json.dumps(settings))
    (model_dir / "model_v1.meta.json").write_text(json.dumps({"fingerprint": model_fingerprint(config)}))
    # the shares training measures on RECORDS (200 records), counted by hand; any other name
    # is on one record (the floor, 1/200)
    shares = {
        "first": {
            "ottilie": 2 / 200,
            "john": 40 / 200,
            "bill": 1 / 200,
            "william": 1 / 200,
            "cathernie": 1 / 200,
            "scholz": 1 / 200,
            "jhon": 1 / 200,
            "smith": 1 / 200,
            "ysolde": 1 / 200,
            "ysolda": 1 / 200,
            "jonh": 1 / 200,
        },
        "last": {
            "quarmby": 2 / 200,
            "smith": 40 / 200,
            "tolputt": 2 / 200,
            "berg": 2 / 200,
            "scholz": 1 / 200,
            "catherine": 1 / 200,
            "john": 1 / 200,
            "penhaligon": 1 / 200,
            "penhaligan": 1 / 200,
            "smiht": 1 / 200,
        },
        "first_floor": 1 / 200,
        "last_floor": 1 / 200,
    }
    (model_dir / "model_v1.names.json").write_text(json.dumps(shares))


@pytest.fixture(scope="module")
def scored(config, tmp_path_factory):
    """(matcher, prepared records, probability of every scored pair at any probability)."""
    model_dir = tmp_path_factory.mktemp("models") / "identity"
    hand_model(config, model_dir)
    low = config.model_copy(update={"model": config.model.model_copy(update={"match_threshold": 0.001})})
    matcher = ProbabilisticMatcher(low, spark=None, model_dir=model_dir)
    prepared = LocalRecords(arrow(RECORDS), low).prepared()
    edges = matcher.predict_local(prepared)
    probability = {
        (r["record_id_l"], r["record_id_r"]): r["match_probability"]
        for r in edges.select(["record_id_l", "record_id_r", "match_probability"]).to_pylist()
    }
    return matcher, prepared, probability


def test_name_frequency_is_first_name_share_times_last_name_share():
    con = duckdb.connect()
    con.register(
        "records",
        pa.table(
            {
                "first_name": ["ann", "ann", "ann", "bo", "bo", None, "cy", None],
                "last_name": ["lee", "lee", "kay", "lee", None, "kay", "kay", None],
            }
        ),
    )
    rows = con.sql(name_shares_sql("records")).fetchall()
    # 6 first names (ann 3, bo 2, cy 1), 6 last names (lee 3, kay 3)
    assert sorted(rows) == sorted(
        [
            ("first", "ann", 0.5),
            ("first", "bo", 2 / 6),
            ("first", "cy", 1 / 6),
            ("last", "lee", 0.5),
            ("last", "kay", 0.5),
        ]
    )
    shares = {"first": {"ann": 0.5, "bo": 2 / 6}, "last": {"lee": 0.5}, "first_floor": 1 / 6, "last_floor": 1 / 6}
    frequencies = name_frequencies(
        [("ann lee", "ann", "lee"), ("bo lee", "bo", "lee"), ("zed kay", "zed", "kay")], shares
    )
    # a name the shares never saw counts as seen once (the floor)
    assert dict(zip(frequencies["full_name"], frequencies["tf_full_name"])) == pytest.approx(
        {"ann lee": 0.25, "bo lee": 2 / 6 * 0.5, "zed kay": 1 / 36}
    )

    # in either order, the larger; a full name that splits two ways takes the larger of both
    shares = {
        "first": {"anna maria": 0.1, "anna": 0.4, "catherine": 0.2},
        "last": {"lee": 0.5, "maria lee": 0.01, "scholz": 0.3},
        "first_floor": 0.001,
        "last_floor": 0.001,
    }
    frequencies = name_frequencies(
        [
            ("anna maria lee", "anna maria", "lee"),  # 0.1 x 0.5; swapped 0.001 x 0.001
            ("anna maria lee", "anna", "maria lee"),  # 0.4 x 0.01
            ("scholz catherine", "scholz", "catherine"),  # 0.001 x 0.001; swapped 0.2 x 0.3
        ],
        shares,
    )
    assert dict(zip(frequencies["full_name"], frequencies["tf_full_name"])) == {
        "anna maria lee": 0.1 * 0.5,
        "scholz catherine": 0.2 * 0.3,
    }


def test_a_rare_exact_name_with_nothing_else_links(config, scored):
    _, _, probability = scored
    # frequency 2/200 x 2/200 = 1e-4: Bayes factor 0.9 / 1e-4 = 9,000; prior odds
    # 0.0025 / 0.9975; posterior odds 22.556 -> p 0.9576 (>= the 0.95 threshold). By Splink's
    # own frequency of the whole name (2 records of 200: 0.01) it would be 0.18
    p = probability[("shop:ottilie", "tp:ottilie")]
    assert p == pytest.approx(0.9576, abs=5e-4)
    assert p >= config.model.match_threshold


def test_a_common_exact_name_with_nothing_else_does_not_link(config, scored):
    _, _, probability = scored
    # frequency 40/200 x 40/200 = 0.04: factor 22.5, posterior odds 0.0564 -> p 0.0534
    p = probability[("shop:john", "tp:john")]
    assert p == pytest.approx(0.0534, abs=5e-4)
    assert p < config.model.match_threshold


def test_a_nickname_of_a_rare_name_weighs_by_its_rarity(config, scored):
    _, _, probability = scored
    # "bill" and "william" (1 of 200 each) with "tolputt" (2 of 200): frequency of either full
    # name 1/200 x 2/200 = 5e-5. The nickname level's own factor 0.05 / 0.0005 = 100 is moved
    # by the exact level's average u over the frequency, 0.01 / 5e-5 = 200: factor 20,000,
    # posterior odds 50.13 -> p 0.9804 (without the frequency: 100 -> p 0.2004)
    p = probability[("shop:bill", "tp:william")]
    assert p == pytest.approx(0.9804, abs=5e-4)
    assert p >= config.model.match_threshold


def test_a_rare_name_swapped_with_a_typo_links_on_the_name_alone(config, scored):
    _, _, probability = scored
    # a candidate only through the rule on one swapped part (first_name_as_last_name /
    # last_name_as_first_name: "scholz" = "scholz"). Either record's name in either order is
    # 1/200 x 1/200 = 2.5e-5: the swapped-with-a-typo level's own factor 0.02 / 0.0002 = 100
    # is moved by 0.01 / 2.5e-5 = 400: factor 40,000, posterior odds 100.25 -> p 0.9901
    # (without the name's rarity: factor 100 -> p 0.2004)
    p = probability[("shop:cathernie", "tp:scholz")]
    assert p == pytest.approx(0.9901, abs=5e-4)
    assert p >= config.model.match_threshold


def test_a_common_name_swapped_with_a_typo_does_not_link(config, scored):
    _, _, probability = scored
    # "smith john" read in either order is as common as "john smith": 40/200 x 40/200 = 0.04
    # (larger than "jhon smith": 1/200 x 40/200 = 0.001). Factor 100 x 0.01 / 0.04 = 25,
    # posterior odds 0.0627 -> p 0.0590. Had "smith john" counted as a first name "smith" (one
    # record) and a last name "john" (one record), 1/200 x 1/200, the larger frequency would
    # be the mistyped 0.001: factor 1,000 -> p 0.7148
    p = probability[("shop:jhon", "tp:smith")]
    assert p == pytest.approx(0.0590, abs=5e-4)


def test_a_rare_name_with_a_typo_in_both_parts_links_on_the_name_alone(config, scored):
    _, _, probability = scored
    # "ysolde penhaligon" / "ysolda penhaligan" (a candidate by the sound of both parts):
    # either spelling 1/200 x 1/200 = 2.5e-5; the level "similar first and last name" 0.01 /
    # 0.0001 = 100 is moved by 0.01 / 2.5e-5 = 400: factor 40,000 -> p 0.9901 (without the
    # name's rarity: factor 100 -> p 0.2004)
    p = probability[("shop:ysolde", "tp:ysolda")]
    assert p == pytest.approx(0.9901, abs=5e-4)
    assert p >= config.model.match_threshold


def test_a_common_name_with_a_typo_in_both_parts_does_not_link(config, scored):
    _, _, probability = scored
    # "jonh smiht" / "john smith": the larger frequency is the correct spelling's 0.04:
    # factor 100 x 0.01 / 0.04 = 25 -> p 0.0590
    p = probability[("shop:jonh", "tp:john")]
    assert p == pytest.approx(0.0590, abs=5e-4)


def test_a_household_stays_apart(config, scored):
    _, _, probability = scored
    # same last name other first name (0.02 / 0.004 = 5) x other birth date (0.05 / 0.95) x
    # same address and phone (0.6 / 0.0005 = 1,200) = 315.8; posterior odds 0.7915 -> p 0.4418
    p = probability[("crm:anna", "crm:mark")]
    assert p == pytest.approx(0.4418, abs=5e-4)
    assert p < config.model.match_threshold


def test_an_incremental_run_weighs_a_name_by_all_records_not_the_new_ones(scored):
    matcher, prepared, probability = scored
    # the partner record arrives last; alone among the new records its name would have
    # frequency 1 x 1 and no weight at all
    new_ids = pa.array(["tp:ottilie", "tp:john", "tp:william"])
    edges = matcher.predict_incremental_local(prepared, new_ids)
    incremental = {
        (r["record_id_l"], r["record_id_r"]): r["match_probability"]
        for r in edges.select(["record_id_l", "record_id_r", "match_probability"]).to_pylist()
    }
    for pair in [("shop:ottilie", "tp:ottilie"), ("shop:john", "tp:john"), ("shop:bill", "tp:william")]:
        assert incremental[pair] == pytest.approx(probability[pair], abs=1e-9)


def test_the_name_shares_saved_with_the_model_decide_not_the_records_of_the_day(config, tmp_path):
    """A pair scores the same whenever it is scored (an incremental run keeps old scores):
    the shares are model parameters, measured at training (``model_v<N>.names.json``)."""
    model_dir = tmp_path / "identity"
    hand_model(config, model_dir)  # saved shares: "ottilie" 2/200, "quarmby" 2/200
    low = config.model_copy(update={"model": config.model.model_copy(update={"match_threshold": 0.001})})
    matcher = ProbabilisticMatcher(low, spark=None, model_dir=model_dir)
    # 50 more Ottilies arrive: by today's records "ottilie" would be 52 of 250 (p 0.05)
    more = [rec(f"crm:o{i}", "Ottilie", letters(600 + i)) for i in range(50)]
    edges = matcher.predict_local(LocalRecords(arrow(RECORDS + more), low).prepared())
    p = {(r["record_id_l"], r["record_id_r"]): r["match_probability"] for r in edges.to_pylist()}
    # saved: 2/200 x 2/200 = 1e-4, as in test_a_rare_exact_name_with_nothing_else_links: p 0.9576
    assert p[("shop:ottilie", "tp:ottilie")] == pytest.approx(0.9576, abs=5e-4)


def test_a_model_without_saved_shares_weighs_names_as_trained(config, tmp_path):
    model_dir = tmp_path / "identity"
    hand_model(config, model_dir)
    (model_dir / "model_v1.names.json").unlink()
    low = config.model_copy(update={"model": config.model.model_copy(update={"match_threshold": 0.001})})
    edges = ProbabilisticMatcher(low, spark=None, model_dir=model_dir).predict_local(
        LocalRecords(arrow(RECORDS), low).prepared()
    )
    p = {(r["record_id_l"], r["record_id_r"]): r["match_probability"] for r in edges.to_pylist()}
    # the exact level's own 0.9 / 0.01 = 90 for any name: odds 0.2256 -> p 0.1841
    assert p[("shop:ottilie", "tp:ottilie")] == pytest.approx(0.1841, abs=5e-4)
    assert p[("shop:john", "tp:john")] == pytest.approx(0.1841, abs=5e-4)


def test_bare_splink_on_the_same_model_differs_by_the_name_frequencies_alone(config, scored):
    """Why lakecdp's probabilistic edges are not bare Splink's pairs on the same records and
    model JSON (bench/identity_embedded.py; bench/RESULTS.md "Why lakecdp's probabilistic
    edges differ from bare Splink's pairs"): Splink computes ``tf_full_name`` as the share of
    records bearing the whole name, lakecdp registers first x last name shares saved with the
    model. Only pairs on a name level weighed by frequency differ, and bare Splink with
    lakecdp's lookup registered scores every pair as lakecdp does."""
    from splink import DuckDBAPI, Linker

    matcher, prepared, lakecdp = scored
    model = matcher.load()
    shares = json.loads(model.path.with_name("model_v1.names.json").read_text())

    def bare(with_shares: bool) -> dict[tuple[str, str], tuple[float, float, float]]:
        """Per pair (ordered): probability, match weight, the name's frequency adjustment."""
        settings = json.loads(model.path.read_text())
        settings["retain_intermediate_calculation_columns"] = True
        db_api = DuckDBAPI()
        registered = db_api.register(prepared)
        linker = Linker(registered, settings)
        if with_shares:  # the lookup by Splink's own API, from the saved shares
            full_names = prepared.select(["full_name", "first_name", "last_name"]).to_pylist()
            lookup = name_frequencies([tuple(r.values()) for r in full_names], shares)
            table = linker.table_management.register_table(pa.table(lookup), "name_frequencies")
            linker.table_management.register_term_frequency_lookup(table, "full_name")
        rows = linker.inference.predict().as_pandas_dataframe()  # every candidate pair
        return {
            (min(r.record_id_l, r.record_id_r), max(r.record_id_l, r.record_id_r)): (
                r.match_probability,
                r.match_weight,
                r.mw_tf_adj_name,
            )
            for r in rows.itertuples()
        }

    with_shares, own = bare(True), bare(False)
    assert set(with_shares) == set(own)
    # lakecdp's edges (threshold 0.001) are bare Splink's pairs with the lookup registered
    assert {pair for pair, (p, _, _) in with_shares.items() if p >= 0.001} == set(lakecdp)
    assert all(with_shares[pair][0] == pytest.approx(p, abs=1e-12) for pair, p in lakecdp.items())
    # Splink's own frequency of the whole name: "ottilie quarmby" is on 2 records of 200,
    # 0.01 (not 2/200 x 2/200 = 1e-4): factor 0.9 / 0.01 = 90, odds 0.2256 -> p 0.1841
    # (lakecdp 0.9576, above the 0.95 threshold: bare Splink leaves the pair out)
    assert own[("shop:ottilie", "tp:ottilie")][0] == pytest.approx(0.1841, abs=5e-4)
    # "bill tolputt" and "william tolputt" 1 of 200 each: the nickname level's 100 moved by
    # 0.01 / 0.005 = 2, factor 200, odds 0.5013 -> p 0.3339 (lakecdp 0.9804)
    assert own[("shop:bill", "tp:william")][0] == pytest.approx(0.3339, abs=5e-4)
    # the weights without the name's frequency adjustment are the same pair for pair, and a
    # pair scores differently exactly where the two adjustments differ
    for pair, (_, weight, adjustment) in own.items():
        assert weight - adjustment == pytest.approx(with_shares[pair][1] - with_shares[pair][2], abs=1e-9)
    differing = {pair for pair in own if own[pair][0] != pytest.approx(with_shares[pair][0], abs=1e-12)}
    adjusted = {pair for pair in own if own[pair][2] != pytest.approx(with_shares[pair][2], abs=1e-12)}
    assert differing == adjusted
    assert {("shop:ottilie", "tp:ottilie"), ("shop:bill", "tp:william")} <= differing
    assert ("crm:anna", "crm:mark") not in differing  # a household: other first name, no frequency
