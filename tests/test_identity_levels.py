"""Which level of the name comparison a pair of names lands on (lakecdp.identity.matching).

No engine start: records are prepared in DuckDB (lakecdp.identity.local) and scored by Splink
on DuckDB; the level (gamma) of each pair depends on the comparison's SQL only, not on the
model's parameters, so a hand-written model with every level at m = u serves.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from lakecdp.identity.config import load_identity_config
from lakecdp.identity.local import LocalRecords
from lakecdp.identity.comparisons import settings_creator
from lakecdp.identity.matching import ProbabilisticMatcher
from lakecdp.identity.model_store import model_fingerprint

REPO_ROOT = Path(__file__).resolve().parents[1]


def records(rows) -> pa.Table:
    """(record_id, first, last) rows as silver customer records at one address."""
    n = len(rows)
    none = pa.array([None] * n, pa.string())
    return pa.table(
        {
            "record_id": [r[0] for r in rows],
            "source": [r[0].split(":")[0] for r in rows],
            "first_name": [r[1] for r in rows],
            "last_name": [r[2] for r in rows],
            "email": none,
            "phone": pa.array(["+447700900123"] * n),
            "date_of_birth": pa.array([date(1970, 1, 1)] * n, pa.date32()),
            "address_line1": pa.array(["4 Kings Road"] * n),
            "postcode": pa.array(["LS1 1AA"] * n),
            "city": none,
            "country": pa.array(["GB"] * n),
            "device_ids": pa.array([None] * n, pa.list_(pa.string())),
            "crm_id": none,
            "customer_number": none,
        }
    )


@pytest.fixture(scope="module")
def config():
    return load_identity_config(REPO_ROOT / "conf")


@pytest.fixture(scope="module")
def matcher(config, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("models") / "identity"
    settings = settings_creator(config, "duckdb").create_settings_dict("duckdb")
    for comparison in settings["comparisons"]:
        for level in comparison["comparison_levels"]:
            if not level.get("is_null_level"):
                level["m_probability"], level["u_probability"] = 0.1, 0.1
    settings["probability_two_random_records_match"] = 0.01
    model_dir.mkdir(parents=True)
    (model_dir / "model_v1.json").write_text(json.dumps(settings))
    (model_dir / "model_v1.meta.json").write_text(json.dumps({"fingerprint": model_fingerprint(config)}))
    return ProbabilisticMatcher(config, spark=None, model_dir=model_dir)


def name_level(config, matcher, left: tuple[str, str], right: tuple[str, str]) -> str:
    """The label of the name level the pair (first, last) x (first, last) lands on."""
    prepared = LocalRecords(records([("crm:l", *left), ("crm:r", *right)]), config).prepared()
    rows = {r["record_id"]: r for r in prepared.to_pylist()}
    linker, _, _ = matcher.linker(prepared)
    gamma = linker.inference.score_pair(rows["crm:l"], rows["crm:r"]).as_record_list()[0]["gamma_name"]
    settings = settings_creator(config, "duckdb").create_settings_dict("duckdb")
    levels = next(c for c in settings["comparisons"] if c["output_column_name"] == "name")["comparison_levels"]
    scored = [lv.get("label_for_charts") for lv in levels if not lv.get("is_null_level")]
    return scored[len(scored) - 1 - gamma]


NICKNAME_TYPO = "nickname one typo, same last name"
OTHER_FIRST_NAME = "same last name, other first name"


@pytest.mark.parametrize(
    ("left", "right", "level"),
    [
        # a short nickname mistyped: "tmi" is "tim" (timothy) transposed, "moo" is "mo"
        # (mohammed) with a letter doubled, "dce" is "dec" (declan) transposed
        (("Tmi", "Saunders"), ("Timothy", "Saunders"), NICKNAME_TYPO),
        (("Mohammed", "Lawrence"), ("Moo", "Lawrence"), NICKNAME_TYPO),
        (("Dce", "Khan"), ("Declan", "Khan"), NICKNAME_TYPO),
        # longer ones, as before
        (("Dannny", "Dunne"), ("Daniel", "Dunne"), NICKNAME_TYPO),
        (("Em", "Dunne"), ("Eimly", "Dunne"), NICKNAME_TYPO),
        # a name the nickname list knows is nobody's typo: a household's Tom (thomas) and
        # Timothy are two people, though "tom" is one letter from "tim"
        (("Tom", "Saunders"), ("Timothy", "Saunders"), OTHER_FIRST_NAME),
        # two letters are too few to call a typo: "om" / "mo"
        (("Om", "Lawrence"), ("Mohammed", "Lawrence"), OTHER_FIRST_NAME),
    ],
)
def test_a_nickname_with_a_typo_lands_on_its_level(config, matcher, left, right, level):
    assert name_level(config, matcher, left, right) == level


SWAPPED_NICKNAME = "first and last name swapped, nickname"


@pytest.mark.parametrize(
    ("left", "right", "level"),
    [
        # the partner file writes the surname first and the given name as its nickname
        (("Oconnor", "Ted"), ("Theodore", "Oconnor"), SWAPPED_NICKNAME),
        (("Theodore", "Oconnor"), ("Oconnor", "Ted"), SWAPPED_NICKNAME),
        (("Russell", "Dec"), ("Declan", "Russell"), SWAPPED_NICKNAME),
        # a swap of one part with another given name is no swap: the names count against
        (("Oconnor", "Tom"), ("Theodore", "Oconnor"), "All other comparisons"),
    ],
)
def test_a_name_swapped_with_a_nickname_lands_on_its_level(config, matcher, left, right, level):
    assert name_level(config, matcher, left, right) == level
