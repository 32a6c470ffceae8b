"""Named blocking rules (lakecdp.identity.blocking): rules that are not "these columns
equal on both sides".

No engine start: the records are prepared in DuckDB (lakecdp.identity.local) and the
configured rules are joined there as Splink joins them (each pair once, the smaller
record id on the left).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from lakecdp.config import ConfigError
from lakecdp.identity.config import ModelSettings, load_identity_config
from lakecdp.identity.local import LocalRecords
from lakecdp.identity.blocking import blocking_rule_sql, populated_rules

REPO_ROOT = Path(__file__).resolve().parents[1]


def records(rows) -> pa.Table:
    """(record_id, first, last, postcode) rows as silver customer records."""
    n = len(rows)
    none = pa.array([None] * n, pa.string())
    return pa.table(
        {
            "record_id": [r[0] for r in rows],
            "source": [r[0].split(":")[0] for r in rows],
            "first_name": [r[1] for r in rows],
            "last_name": [r[2] for r in rows],
            "email": none,
            "phone": none,
            "date_of_birth": pa.array([None] * n, pa.date32()),
            "address_line1": none,
            "postcode": [r[3] for r in rows],
            "city": none,
            "country": pa.array(["GB"] * n),
            "device_ids": pa.array([None] * n, pa.list_(pa.string())),
            "crm_id": none,
            "customer_number": none,
        }
    )


def candidate_pairs(config, rows, rules=None) -> set[tuple[str, str]]:
    local = LocalRecords(records(rows), config)
    prepared = local.prepared()
    rules = populated_rules(config, prepared) if rules is None else rules
    local.con.register("prepared", prepared)
    condition = " or ".join(f"({blocking_rule_sql(rule)})" for rule in rules)
    found = local.con.sql(f"""
        select l.record_id, r.record_id from prepared l join prepared r
        on l.record_id < r.record_id and ({condition})
    """).fetchall()
    return set(found)


# one person: the partner has the name swapped, the shop mistyped the first name; nothing
# else is shared, so no part is equal in the same place. Record ids decide which side a
# record is on: each record is on the left once
SWAPPED_WITH_A_TYPO_LEFT = [("a:1", "Cathernie", "Scholz", "CB1 0JL"), ("b:1", "Scholz", "Catherine", None)]
SWAPPED_WITH_A_TYPO_RIGHT = [("a:2", "Scholz", "Catherine", None), ("b:2", "Cathernie", "Scholz", "CB1 0JL")]
ONE_PART_SWAPPED = (["first_name_as_last_name"], ["last_name_as_first_name"])


@pytest.mark.parametrize("rows", [SWAPPED_WITH_A_TYPO_LEFT, SWAPPED_WITH_A_TYPO_RIGHT], ids=["typo-left", "typo-right"])
def test_a_name_swapped_with_a_typo_is_a_candidate_whichever_record_is_on_the_left(rows):
    config = load_identity_config(REPO_ROOT / "conf")
    assert candidate_pairs(config, rows) == {(rows[0][0], rows[1][0])}
    # no other rule of the shipped set finds it
    others = [rule for rule in config.model.blocking_rules if rule not in ONE_PART_SWAPPED]
    assert candidate_pairs(config, rows, others) == set()


@pytest.mark.parametrize(
    "rows",
    [
        # a shop record without birth date, a partner record without address: one surname and
        # a first name mistyped or shortened past its sound and the nickname list
        [("shop:1", "Arhur", "Kohler", "CF10 7TE"), ("tp:1", "Arthur", "Kohler", None)],
        [("shop:2", "Philip", "Beck", "N7 8BB"), ("tp:2", "Phil", "Beck", None)],
        [("shop:3", "Fran", "OSullivan", "CB1 5SS"), ("tp:3", "Frances", "OSullivan", None)],
    ],
    ids=["typo", "short-form", "nickname-unlisted"],
)
def test_a_surname_with_a_first_name_starting_alike_is_a_candidate(rows):
    config = load_identity_config(REPO_ROOT / "conf")
    assert candidate_pairs(config, rows) == {(rows[0][0], rows[1][0])}
    others = [rule for rule in config.model.blocking_rules if rule != ["last_name_first_initial"]]
    assert candidate_pairs(config, rows, others) == set()


def test_the_one_part_swapped_rules_are_one_sided_and_mirror_each_other():
    assert blocking_rule_sql(["first_name_as_last_name"]) == (
        "l.first_name = r.last_name and substr(l.last_name, 1, 1) = substr(r.first_name, 1, 1)"
    )
    assert blocking_rule_sql(["last_name_as_first_name"]) == (
        "l.last_name = r.first_name and substr(l.first_name, 1, 1) = substr(r.last_name, 1, 1)"
    )
    assert blocking_rule_sql(["swapped_names"]) == "l.first_name = r.last_name and l.last_name = r.first_name"
    assert blocking_rule_sql(["dob", "postcode"]) == "l.dob = r.dob and l.postcode = r.postcode"


def test_a_named_rule_stands_alone_in_its_list():
    ModelSettings(blocking_rules=[["first_name_as_last_name"], ["last_name_as_first_name"]])
    with pytest.raises(ValueError, match=r"unknown columns \['first_name_as_last_name'\].*\['swapped_names'\]"):
        ModelSettings(blocking_rules=[["dob", "first_name_as_last_name"]])


def test_the_config_file_names_the_rule_it_refuses(tmp_path):
    (tmp_path / "identity.yaml").write_text("version: 1\nmodel:\n  blocking_rules:\n    - [first_name_as_surname]\n")
    with pytest.raises(ConfigError, match=r"identity.yaml: model: .*unknown columns \['first_name_as_surname'\]"):
        load_identity_config(tmp_path)


# What keeps the named rules from pairing most of a large customer base: on the generator's
# 984,917-record world the bare "one record's first name is the other's surname" rules paired
# 271M records and "same surname, same initial" 88M; with the checks below 15M and 11M
# (bench/RESULTS.md, "Identity blocking at ~1M records"), and no true pair of the FEBRL sets or the
# generated worlds is lost.


def test_a_name_part_in_the_other_place_pairs_only_when_the_other_part_starts_alike():
    config = load_identity_config(REPO_ROOT / "conf")
    # "james" is one's first name and the other's surname, but the other parts differ from the
    # first letter: two people (a "james smith" and a "thomas james"), not one name swapped
    rows = [("a:1", "James", "Smith", "CB1 0JL"), ("b:1", "Thomas", "James", "N7 8BB")]
    assert candidate_pairs(config, rows, list(ONE_PART_SWAPPED)) == set()
    # the same with the other part starting alike ("smith james" / "james smyth")
    rows = [("a:1", "Smyth", "James", "CB1 0JL"), ("b:1", "James", "Smith", "N7 8BB")]
    assert candidate_pairs(config, rows, list(ONE_PART_SWAPPED)) == {("a:1", "b:1")}


@pytest.mark.parametrize(
    ("first", "other", "paired"),
    [
        ("Anna", "Arthur", False),  # one household, two people with one initial
        ("Alice", "Andrew", False),
        ("Arhur", "Arthur", True),  # one typo
        ("Cathreine", "Catherine", True),  # two letters swapped
        ("Fran", "Frances", True),  # a short form (one starts the other)
        ("Hank", "Henry", True),  # the nickname list's family
    ],
)
def test_a_surname_and_initial_pair_only_first_names_a_typo_a_short_form_or_a_nickname_apart(first, other, paired):
    config = load_identity_config(REPO_ROOT / "conf")
    rows = [("shop:1", first, "Kohler", "CF10 7TE"), ("tp:1", other, "Kohler", None)]
    expected = {("shop:1", "tp:1")} if paired else set()
    assert candidate_pairs(config, rows, [["last_name_first_initial"]]) == expected
    # the same with the records on the other sides
    rows = [("shop:1", other, "Kohler", "CF10 7TE"), ("tp:1", first, "Kohler", None)]
    assert candidate_pairs(config, rows, [["last_name_first_initial"]]) == expected
