"""The birth-date guard (lakecdp.identity.conflicts): a cluster never chains two records whose
birth dates disagree beyond a typo, unless a strong edge links them directly."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from pyspark.testing import assertDataFrameEqual

from lakecdp.identity.clustering import cluster_edges
from lakecdp.identity.config import IdentityConfig, load_identity_config
from lakecdp.identity.conflicts import birth_dates_disagree, split_birth_date_conflicts
from lakecdp.identity.deterministic import EDGE_SCHEMA

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFLICT = "birth_date_conflict"


@pytest.fixture(scope="module")
def config() -> IdentityConfig:
    # the shipped guards: match threshold 0.95, strong from 0.99, weak links split
    return load_identity_config(REPO_ROOT / "conf")


@pytest.mark.parametrize(
    ("left", "right", "disagree"),
    [
        ("19650410", "19420923", True),  # mother and daughter of one name
        ("19691127", "19970616", True),
        ("19650410", "19650410", False),  # the same date
        ("19960208", "19960708", False),  # one typo
        ("19650410", "19560410", False),  # two digits transposed: one typo
        ("19650410", "19651004", False),  # day and month swapped
        ("19650410", "19650428", False),  # same year and month
        ("19650410", "19630419", False),  # two typos
        ("19650410", "19631419", True),  # three typos
    ],
)
def test_birth_dates_disagree_beyond_the_typos_the_comparison_allows(left, right, disagree):
    assert birth_dates_disagree(left, right) is disagree
    assert birth_dates_disagree(right, left) is disagree


def test_a_record_without_birth_date_joins_the_piece_it_links_to_most_strongly():
    clusters = {r: "a" for r in ("a", "b", "s", "t")}
    dates = {"a": "19650410", "b": "19420923"}
    # s links a and b; t links b more strongly than a; no direct edge a-b
    edges = [("a", "s", 0.999), ("b", "s", 0.998), ("a", "t", 0.991), ("b", "t", 0.995)]
    assert split_birth_date_conflicts(clusters, edges, dates, strong=0.99) == {"a": "a", "s": "a", "b": "b", "t": "b"}
    # the same edges listed in another order give the same pieces
    assert split_birth_date_conflicts(clusters, edges[::-1], dates, strong=0.99) == {
        "a": "a",
        "s": "a",
        "b": "b",
        "t": "b",
    }
    # a strong direct edge vouches for the two dates: nothing splits
    assert split_birth_date_conflicts(clusters, [*edges, ("a", "b", 0.995)], dates, strong=0.99) == {}
    # a weak direct edge does not
    assert split_birth_date_conflicts(clusters, [*edges, ("a", "b", 0.97)], dates, strong=0.99)["b"] == "b"


def test_strong_edges_between_dated_records_vouch_for_dates_that_disagree():
    # FEBRL's shape: two duplicates each carry their own error in the original's date; each
    # is two typos from the original, the two are three apart, and they share no edge
    clusters = {r: "d1" for r in ("d1", "d2", "o")}
    edges = [("d1", "o", 0.999), ("d2", "o", 0.999)]
    dates = {"o": "19650410", "d1": "19010410", "d2": "19690419"}
    assert split_birth_date_conflicts(clusters, edges, dates, strong=0.99) == {}
    # the original without its date: nothing compared d1's date with d2's; it goes with the
    # one it matches better, and with neither when it matches both equally (the namesakes of
    # one household with a record that could be either's)
    undated = {"d1": "19010410", "d2": "19690419"}
    closer = [("d1", "o", 0.999), ("d2", "o", 0.998)]
    assert split_birth_date_conflicts(clusters, closer, undated, strong=0.99) == {"d1": "d1", "o": "d1", "d2": "d2"}
    assert split_birth_date_conflicts(clusters, edges, undated, strong=0.99) == {"d1": "d1", "o": "o", "d2": "d2"}
    # a weak edge vouches for nothing either
    weak = [("d1", "o", 0.999), ("d2", "o", 0.97)]
    assert split_birth_date_conflicts(clusters, weak, dates, strong=0.99) == {"d1": "d1", "o": "d1", "d2": "d2"}


@pytest.mark.parametrize("backend", ["duckdb", pytest.param("spark", marks=pytest.mark.slow)])
def test_a_cluster_never_chains_two_birth_dates_that_disagree(spark, config, backend):
    chosen = config.with_backend(backend)
    ids = spark.createDataFrame(
        [
            # M: two women of one name at one address, born 1965 and 1942 (each with her own
            # shop record, found by email); each shop record, without birth date, also matches
            # the other woman, and the two CRM records match each other weakly (0.964)
            ("M1", "crm", date(1965, 4, 10)),
            ("S1", "shop", None),
            ("M2", "crm", date(1942, 9, 23)),
            ("S2", "shop", None),
            # D: dates far apart, but the model linked the two records directly and strongly
            ("D1", "crm", date(1950, 1, 1)),
            ("D2", "tp", date(1980, 6, 15)),
            # E: dates one typo apart, joined through a record without birth date
            ("E1", "crm", date(1996, 2, 8)),
            ("E2", "tp", date(1996, 7, 8)),
            ("E3", "shop", None),
            # A: a shop record of A2 at A1's address links A1 weakly (a single record: no
            # weak bridge for the weak-link guard)
            ("A1", "crm", date(1969, 11, 27)),
            ("A2", "crm", date(1997, 6, 16)),
            ("A3", "shop", None),
        ],
        "record_id string, source string, date_of_birth date",
    )
    edges = spark.createDataFrame(
        [
            ("M1", "S1", "deterministic", "email", None, None, "r"),
            ("M2", "S2", "deterministic", "email", None, None, "r"),
            ("M1", "S2", "probabilistic", "name", 0.9992, 10.2, "r"),
            ("M2", "S1", "probabilistic", "name", 0.9992, 10.2, "r"),
            ("S1", "S2", "probabilistic", "name", 0.9992, 10.2, "r"),
            ("M1", "M2", "probabilistic", "name", 0.964, 4.7, "r"),
            ("D1", "D2", "probabilistic", "name", 0.995, 7.6, "r"),
            ("E1", "E3", "probabilistic", "name", 0.999, 10.0, "r"),
            ("E2", "E3", "probabilistic", "name", 0.999, 10.0, "r"),
            ("A2", "A3", "probabilistic", "email", 0.9999, 13.3, "r"),
            ("A1", "A3", "probabilistic", "name", 0.978, 5.5, "r"),
        ],
        EDGE_SCHEMA,
    )
    assertDataFrameEqual(
        cluster_edges(ids, edges, chosen),
        [
            ("A1", "A1", 1, 1.0, [CONFLICT]),
            ("A2", "A2", 2, 0.9999, [CONFLICT]),
            ("A3", "A2", 2, 0.9999, [CONFLICT]),
            ("D1", "D1", 2, 0.995, []),
            ("D2", "D1", 2, 0.995, []),
            ("E1", "E1", 3, 0.999, []),
            ("E2", "E1", 3, 0.999, []),
            ("E3", "E1", 3, 0.999, []),
            ("M1", "M1", 2, 1.0, [CONFLICT]),
            ("M2", "M2", 2, 1.0, [CONFLICT]),
            ("S1", "M1", 2, 1.0, [CONFLICT]),
            ("S2", "M2", 2, 1.0, [CONFLICT]),
        ],
    )
    # without birth dates there is nothing to guard: M and A stay whole
    whole = cluster_edges(ids.select("record_id", "source"), edges, chosen)
    sizes = {r["record_id"]: r["cluster_size"] for r in whole.collect()}
    assert (sizes["M1"], sizes["S2"], sizes["A1"]) == (4, 4, 3)
