"""Named blocking rules: rules that are not "these columns equal on both sides".

A configured blocking rule is a list of prepared columns that must be equal on both records
(``[dob, last_name]``), or one of the named rules here, written as a one-item list
(``[swapped_names]``). Each named rule is one SQL condition over ``l`` and ``r`` (plain SQL,
the same in DuckDB and Spark) and the columns it needs filled somewhere in the data.

Splink pairs each two records once, with the smaller id on the left, so a condition that is
not symmetrical in ``l`` and ``r`` comes with its mirror image as a second rule
(``first_name_as_last_name`` and ``last_name_as_first_name``).

Each rule is kept narrow enough for a large customer base: a bare "one record's first name is
the other's surname" paired 271M records of the generator's 984,917-record world ("james",
"thomas", "lewis" are first names and surnames), "same surname, same initial" 88M; with the
checks below 15M and 11M, and no true pair of FEBRL1/2 or the generated worlds lost
(bench/RESULTS.md, "Identity blocking at ~1M records").

Example:
    >>> special_rule_sql(["first_name_as_last_name"])
    'l.first_name = r.last_name and substr(l.last_name, 1, 1) = substr(r.first_name, 1, 1)'
"""

from __future__ import annotations

#: name -> (SQL over ``l`` and ``r``, the columns it reads)
SPECIAL_RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    # both parts swapped: "scholz catherine" / "catherine scholz"
    "swapped_names": (
        "l.first_name = r.last_name and l.last_name = r.first_name",
        ("first_name", "last_name"),
    ),
    # one part swapped, the other mistyped: "cathernie scholz" / "scholz catherine",
    # "frances lloyd" / "llyd frances" (the mistyped part keeps its first letter). Two rules,
    # one per side the swapped record is on
    "first_name_as_last_name": (
        "l.first_name = r.last_name and substr(l.last_name, 1, 1) = substr(r.first_name, 1, 1)",
        ("first_name", "last_name"),
    ),
    "last_name_as_first_name": (
        "l.last_name = r.first_name and substr(l.first_name, 1, 1) = substr(r.last_name, 1, 1)",
        ("first_name", "last_name"),
    ),
    # same surname, first names starting alike and at most two edits apart, one the start
    # of the other or one in the other's nickname family: a first name mistyped or shortened
    # beyond its sound ("arhur" / "arthur", "phil" / "philip", "fran" / "frances", "hal" /
    # "harold") with nothing else shared; not two members of one household ("anna" / "arthur")
    "last_name_first_initial": (
        "l.last_name = r.last_name and substr(l.first_name, 1, 1) = substr(r.first_name, 1, 1)"
        " and (levenshtein(l.first_name, r.first_name) <= 2"
        " or substr(l.first_name, 1, length(r.first_name)) = r.first_name"
        " or substr(r.first_name, 1, length(l.first_name)) = l.first_name"
        " or array_contains(r.first_name_family, l.first_name))",
        ("first_name", "last_name", "first_name_family"),
    ),
}


def special_rule(rule: list[str]) -> str | None:
    """The name of the special rule ``rule`` is (``[swapped_names]``), else None."""
    return rule[0] if len(rule) == 1 and rule[0] in SPECIAL_RULES else None


def special_rule_sql(rule: list[str]) -> str:
    return SPECIAL_RULES[rule[0]][0]


def rule_columns(rule: list[str]) -> list[str]:
    """The prepared columns ``rule`` reads (a rule over a column no record fills is skipped)."""
    name = special_rule(rule)
    return list(SPECIAL_RULES[name][1]) if name else list(rule)
