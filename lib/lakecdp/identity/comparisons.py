"""The Splink comparisons and settings, per backend.

SQL functions and date formats differ between DuckDB and Spark, so the *settings* are
generated for the backend in use (the trained parameters come from one model file either
backend can apply, :mod:`lakecdp.identity.model_store`).

Evidence design (what the product is judged on): households share surname, address,
phone and sometimes email, so

- street and postcode are one ``address`` comparison and email and phone one ``contact``
  comparison: correlated evidence is counted once;
- first name (with nicknames) and date of birth carry their own weight, so a sibling
  with the same surname, address and phone but another first name and birth date is a
  different customer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lakecdp.identity.blocking import blocking_rule_sql, special_rule
from lakecdp.identity.config import ComparisonSpec, IdentityConfig

if TYPE_CHECKING:
    from splink import SettingsCreator
    from splink.internals.blocking_rule_creator import BlockingRuleCreator
    from splink.internals.comparison_creator import ComparisonCreator
    from splink.internals.comparison_level_creator import ComparisonLevelCreator

DATE_FORMATS = {"duckdb": "%Y%m%d", "spark": "yyyyMMdd"}


def _similar(column: str, threshold: float) -> ComparisonLevelCreator:
    """One typo or transposition (Damerau-Levenshtein <= 1) or Jaro-Winkler >= threshold:
    "wil"/"wli" and "nathas"/"nathan" are the same name mistyped."""
    import splink.comparison_level_library as cll

    return cll.Or(cll.JaroWinklerLevel(column, threshold), cll.DamerauLevenshteinLevel(column, 1))


def _similar_reversed(first: str, last: str) -> ComparisonLevelCreator:
    """First and last name swapped, each at most one typo away (symmetrical)."""
    import splink.comparison_level_library as cll

    # one typo only: Jaro-Winkler rates a prefix ("dec" / "declan") similar, and a swap
    # that holds only through prefixes is no swap
    def close(a: str, b: str) -> str:
        return f"damerau_levenshtein({a}, {b}) <= 1"

    return cll.CustomLevel(f"{close(first + '_l', last + '_r')} and {close(last + '_l', first + '_r')}")


def _nickname_typo(backend: str) -> ComparisonLevelCreator:
    """Either first name one typo (or transposition) away from a name of the other's
    nickname family ("dannny" / "daniel" via "danny", "eimly" / "em" via "emily", "tmi" /
    "timothy" via "tim", "moo" / "mohammed" via "mo"). The mistyped name has at least three
    letters and is no name the nickname list knows: "tom" is not "tim" mistyped. Symmetrical."""
    import splink.comparison_level_library as cll

    def one_way(side: str, other: str) -> str:
        name, family, known = f"first_name_{side}", f"first_name_family_{other}", f"first_name_known_{side}"
        test = f"length(x) >= 2 and damerau_levenshtein({name}, x) <= 1"
        if backend == "spark":
            found = f"exists({family}, x -> {test})"
        else:
            found = f"len(list_filter({family}, lambda x: {test})) > 0"
        return f"not {known} and length({name}) >= 3 and {found}"

    return cll.CustomLevel(f"({one_way('l', 'r')}) or ({one_way('r', 'l')})", base_dialect_str=backend)


def _swapped_nickname(backend: str) -> ComparisonLevelCreator:
    """One record has the names swapped and the given name as a nickname of the other's
    ("oconnor ted" / "theodore oconnor"): its first name is the other's last name and its
    last name is in the other's nickname family. Symmetrical."""
    import splink.comparison_level_library as cll

    contains = "array_contains" if backend == "spark" else "list_contains"

    def one_way(swapped: str, other: str) -> str:
        return (
            f"first_name_{swapped} = last_name_{other} and {contains}(first_name_family_{other}, last_name_{swapped})"
        )

    return cll.CustomLevel(f"({one_way('l', 'r')}) or ({one_way('r', 'l')})", base_dialect_str=backend)


def _name_comparison(spec: ComparisonSpec, backend: str) -> ComparisonCreator:
    """First + last name as ONE comparison, graded from exact to phonetic.

    A name missing on one side is not "nothing to compare" while the other name is there:
    with a first name on both sides the first names must agree for any level above
    "else", so ``Jan Pinon`` / ``Hillary <no surname>`` counts against a match exactly
    as two different first names do (a household's other member).
    """
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    t = spec.fuzzy_threshold
    first_same = cll.ArrayIntersectLevel("first_name_variants", 1)
    last_same = cll.ExactMatchLevel("last_name")
    # full_name is "first last" when both are there (null otherwise), so exact on it is
    # exact on both; Splink's term-frequency adjustment needs a plain exact level
    exact: ComparisonLevelCreator = cll.ExactMatchLevel("full_name", term_frequency_adjustments=spec.term_frequency)
    exact = exact.configure(label_for_charts="first and last name exact")

    def rarer(level: ComparisonLevelCreator) -> ComparisonLevelCreator:
        """With term frequencies, a name swapped, nicknamed or with one typo in one part
        weighs by how rare it is too: by the more common of the two records' full names (the
        larger frequency ``f``; Splink adds ``log2(u_exact / f)`` to the level's weight, u_exact
        being the exact level's average). A part mistyped is rare by accident, so the other
        record's spelling decides, also with both parts one typo / similar ("doanld patl" /
        "donald patel"). The weaker levels (sound alike, initials) stay as trained: too far
        from one name to borrow its frequency."""
        if not spec.term_frequency:
            return level
        return level.configure(tf_adjustment_column="full_name", tf_adjustment_weight=1.0)

    # two different names the nickname list knows are two people's names, not one mistyped:
    # a household's "ronald" and "donald" at one address must not read as a typo
    not_two_names = cll.Not(cll.CustomLevel("first_name_known_l and first_name_known_r"))
    first_initial = cll.CustomLevel(
        "(length(first_name_l) = 1 or length(first_name_r) = 1) "
        "and substr(first_name_l, 1, 1) = substr(first_name_r, 1, 1)"
    )
    return cl.CustomComparison(
        output_column_name="name",
        comparison_description="first and last name",
        comparison_levels=[
            # nothing to compare: no first name on one side and no last name on one side
            cll.CustomLevel(
                "(first_name_l is null or first_name_r is null) and (last_name_l is null or last_name_r is null)"
            ).configure(is_null_level=True, label_for_charts="no name to compare"),
            exact,
            # symmetrical: Splink's default checks only l.first = r.last, so a pair scored
            # as (a, b) and as (b, a) differed, and incremental runs (new records on the left)
            # disagreed with full runs (smaller record id on the left)
            rarer(
                cll.ColumnsReversedLevel("first_name", "last_name", symmetrical=True).configure(
                    label_for_charts="first and last name swapped"
                )
            ),
            rarer(
                _similar_reversed("first_name", "last_name").configure(
                    label_for_charts="first and last name swapped, one typo / similar"
                )
            ),
            rarer(_swapped_nickname(backend).configure(label_for_charts="first and last name swapped, nickname")),
            rarer(cll.And(first_same, last_same).configure(label_for_charts="nickname, same last name")),
            rarer(
                cll.And(not_two_names, _similar("first_name", t), last_same).configure(
                    label_for_charts="first name one typo / similar, same last name"
                )
            ),
            rarer(
                cll.And(first_same, _similar("last_name", t)).configure(
                    label_for_charts="same first name, last name one typo / similar"
                )
            ),
            rarer(
                cll.And(not_two_names, _similar("first_name", t), _similar("last_name", t)).configure(
                    label_for_charts="similar first and last name"
                )
            ),
            cll.And(
                not_two_names, cll.ExactMatchLevel("first_name_soundex"), cll.ExactMatchLevel("last_name_soundex")
            ).configure(label_for_charts="first and last name sound alike"),
            cll.And(first_initial, last_same).configure(label_for_charts="initial, same last name"),
            # a nickname with a typo on top: without it "Dannny Dunne" / "Daniel Dunne" at one
            # address reads as two members of one household
            cll.And(last_same, not_two_names, _nickname_typo(backend)).configure(
                label_for_charts="nickname one typo, same last name"
            ),
            # one record lacks a last name: the first names alone speak
            cll.And(cll.NullLevel("last_name"), first_same).configure(
                label_for_charts="same first name, last name missing"
            ),
            cll.And(cll.NullLevel("last_name"), _similar("first_name", t)).configure(
                label_for_charts="similar first name, last name missing"
            ),
            cll.And(cll.NullLevel("first_name"), last_same).configure(
                label_for_charts="same last name, first name missing"
            ),
            cll.And(cll.NullLevel("first_name"), _similar("last_name", t)).configure(
                label_for_charts="similar last name, first name missing"
            ),
            # names that disagree in one part: a household's other member (same surname),
            # or one person's first name mistyped beyond recognition / surname changed by
            # marriage. Their own levels, so EM learns from the data how often true matches
            # show them; the birth date and address still decide, and a household member
            # differs there too
            cll.And(last_same, cll.Not(cll.NullLevel("first_name"))).configure(
                label_for_charts="same last name, other first name"
            ),
            cll.And(first_same, cll.Not(cll.NullLevel("last_name"))).configure(
                label_for_charts="same first name, other last name"
            ),
            cll.And(_similar("first_name", t), cll.Not(cll.NullLevel("last_name"))).configure(
                label_for_charts="similar first name, other last name"
            ),
            cll.ElseLevel(),
        ],
    )


def _dob_comparison(spec: ComparisonSpec, backend: str) -> ComparisonCreator:
    """Birth date as ``yyyyMMdd`` text: exact, one typo, day/month swapped, same month,
    two typos, else. Text levels only, so an unparseable raw date still compares."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    day_month_swapped = cll.CustomLevel(
        "substr(dob_l, 1, 4) = substr(dob_r, 1, 4) "
        "and substr(dob_l, 5, 2) = substr(dob_r, 7, 2) "
        "and substr(dob_l, 7, 2) = substr(dob_r, 5, 2)",
        label_for_charts="day and month swapped",
    )
    return cl.CustomComparison(
        output_column_name="date_of_birth",
        comparison_description="date of birth",
        comparison_levels=[
            cll.NullLevel("dob"),
            cll.ExactMatchLevel("dob").configure(label_for_charts="same date of birth"),
            cll.DamerauLevenshteinLevel("dob", 1).configure(label_for_charts="one typo"),
            day_month_swapped,
            cll.CustomLevel("substr(dob_l, 1, 6) = substr(dob_r, 1, 6)").configure(
                label_for_charts="same year and month"
            ),
            cll.DamerauLevenshteinLevel("dob", 2).configure(label_for_charts="two typos"),
            # a raw text that is no calendar date ("19880132") and is not within the typos
            # above says nothing about the true date: neutral, not "different"
            cll.CustomLevel(f"not ({_calendar_date('dob_l')}) or not ({_calendar_date('dob_r')})").configure(
                is_null_level=True, label_for_charts="not a calendar date on one side"
            ),
            cll.ElseLevel(),
        ],
    )


def _calendar_date(column: str) -> str:
    """SQL (both dialects): ``column`` (yyyyMMdd text) has a month 01-12 and a day that month
    can have (February up to 29)."""
    month, day = f"substr({column}, 5, 2)", f"substr({column}, 7, 2)"
    return (
        f"{month} between '01' and '12' and {day} between '01' and "
        f"(case when {month} = '02' then '29' when {month} in ('04', '06', '09', '11') then '30' else '31' end)"
    )


def _address_comparison(spec: ComparisonSpec) -> ComparisonCreator:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    t = spec.fuzzy_threshold
    same_street = cll.ExactMatchLevel("address_line1")
    same_postcode = cll.ExactMatchLevel("postcode", term_frequency_adjustments=False)
    both: ComparisonLevelCreator = cll.And(cll.ExactMatchLevel("address_line1"), cll.ExactMatchLevel("postcode"))
    both = both.configure(label_for_charts="same street and postcode")
    if spec.term_frequency:
        both = both.configure(tf_adjustment_column="postcode", tf_adjustment_weight=1.0)
    return cl.CustomComparison(
        output_column_name="address",
        comparison_description="street and postcode, as one piece of evidence",
        comparison_levels=[
            cll.And(cll.NullLevel("address_line1"), cll.NullLevel("postcode")).configure(
                is_null_level=True, label_for_charts="address missing"
            ),
            both,
            cll.And(cll.ExactMatchLevel("postcode"), cll.JaroWinklerLevel("address_line1", t)).configure(
                label_for_charts="same postcode, similar street"
            ),
            same_street.configure(label_for_charts="same street, other postcode"),
            same_postcode.configure(label_for_charts="same postcode, other street"),
            cll.ElseLevel(),
        ],
    )


def _contact_comparison(spec: ComparisonSpec) -> ComparisonCreator:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    return cl.CustomComparison(
        output_column_name="contact",
        comparison_description="email and phone, as one piece of evidence",
        comparison_levels=[
            cll.And(cll.NullLevel("email"), cll.NullLevel("phone")).configure(
                is_null_level=True, label_for_charts="no email or phone to compare"
            ),
            cll.And(cll.ExactMatchLevel("email"), cll.ExactMatchLevel("phone")).configure(
                label_for_charts="same email and phone"
            ),
            cll.Or(cll.ExactMatchLevel("email"), cll.ExactMatchLevel("phone")).configure(
                label_for_charts="same email or phone"
            ),
            cll.ElseLevel(),
        ],
    )


def _address_contact_comparison(spec: ComparisonSpec) -> ComparisonCreator:
    """Where a person lives and how to reach them, as ONE piece of evidence: a household
    shares all of it, so it may count once, never three times.

    Graded: street + number + postcode, one typo in the postcode or the street, same
    street and number without a postcode, same street other number (a neighbour or a
    typo), same postcode, same city, else.
    """
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    t = spec.fuzzy_threshold
    same_street = cll.ExactMatchLevel("address_line1")
    same_postcode = cll.ExactMatchLevel("postcode")
    same_place = cll.And(same_street, same_postcode)
    same_contact = cll.Or(cll.ExactMatchLevel("email"), cll.ExactMatchLevel("phone"))
    same_number = cll.ExactMatchLevel("street_number")
    postcode_typo = cll.DamerauLevenshteinLevel("postcode", 1)
    street_similar = cll.And(same_number, _similar("street_name", t))
    return cl.CustomComparison(
        output_column_name="address_contact",
        comparison_description="address and contact points, as one piece of evidence",
        comparison_levels=[
            cll.And(
                cll.NullLevel("address_line1"),
                cll.NullLevel("postcode"),
                cll.NullLevel("email"),
                cll.NullLevel("phone"),
            ).configure(is_null_level=True, label_for_charts="nothing to compare"),
            cll.And(same_place, same_contact).configure(label_for_charts="same address and contact"),
            same_contact.configure(label_for_charts="same email or phone"),
            same_place.configure(label_for_charts="same address"),
            cll.Or(
                cll.And(same_street, postcode_typo),
                cll.And(same_postcode, street_similar),
            ).configure(label_for_charts="same address but one typo"),
            cll.And(street_similar, cll.Or(postcode_typo, cll.ExactMatchLevel("city"))).configure(
                label_for_charts="same street and number, postcode or city close"
            ),
            cll.Or(same_street, street_similar).configure(
                label_for_charts="same street and number, other or no postcode"
            ),
            cll.And(same_postcode, cll.ExactMatchLevel("street_name")).configure(
                label_for_charts="same street, other number"
            ),
            # a typo in the number and in the street name or postcode at once ("511 bywaters
            # pilace 5014" / "15 bywaters pl 5041"): the street still reads alike and the place
            # is near
            cll.And(
                _similar("street_name", t),
                cll.Or(same_postcode, postcode_typo, cll.ExactMatchLevel("city")),
            ).configure(label_for_charts="similar street, postcode or city close"),
            # another street but a postcode one typo away in a town of the same name
            cll.And(postcode_typo, _similar("city", t)).configure(label_for_charts="postcode one typo, same town"),
            same_postcode.configure(label_for_charts="same postcode only"),
            cll.ExactMatchLevel("city").configure(label_for_charts="same city only"),
            cll.ElseLevel(),
        ],
    )


def splink_comparison(spec: ComparisonSpec, backend: str) -> ComparisonCreator:
    """The Splink comparison for one configured piece of evidence."""
    if spec.kind == "name":
        return _name_comparison(spec, backend)
    if spec.kind == "date_of_birth":
        return _dob_comparison(spec, backend)
    if spec.kind == "address":
        return _address_comparison(spec)
    if spec.kind == "contact":
        return _contact_comparison(spec)
    if spec.kind == "address_contact":
        return _address_contact_comparison(spec)
    raise ValueError(f"unknown comparison kind {spec.kind!r}")


def settings_creator(config: IdentityConfig, backend: str, *, rules: list[list[str]] | None = None) -> SettingsCreator:
    """Splink ``SettingsCreator`` for ``backend`` built from the validated config.

    ``rules``: the prediction blocking rules to use (default: all configured ones).
    """
    from splink import SettingsCreator, block_on

    model = config.model
    prediction_rules: list[str | BlockingRuleCreator] = [
        blocking_rule_sql(r) if special_rule(r) else block_on(*r)
        for r in (model.blocking_rules if rules is None else rules)
    ]
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="record_id",
        comparisons=[splink_comparison(spec, backend) for spec in model.comparisons],
        # Splink turns an SQL string into a rule too (to_blocking_rule_creator); its annotation omits str
        blocking_rules_to_generate_predictions=prediction_rules,  # type: ignore[arg-type]
        additional_columns_to_retain=["source"],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=True,
        max_iterations=model.training.em_max_iterations,
    )
