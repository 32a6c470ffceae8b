"""The phone fast path against phonenumbers (the oracle): the same E.164 text, or it defers.

Hypothesis writes numbers in the shapes people type them (E.164, international with spaces,
national with a trunk prefix, parentheses, hyphens, a leading 00, extensions, unicode digits,
letters, junk) in many regions; :func:`lakecdp.ingest.phones.e164_fast` must answer exactly what
:func:`lakecdp.ingest.phones.e164` (phonenumbers.parse) answers, or :data:`DEFER`.
"""

from __future__ import annotations

import phonenumbers
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.examples import examples

from lakecdp.ingest.phones import (
    DEFER,
    e164,
    e164_array,
    e164_digits,
    e164_digits_array,
    e164_fast,
    e164_many,
    e164_one,
)

#: the regions the sample generator writes, their neighbours, and ones with unusual metadata
#: (Italian leading zeros, NANP, carrier codes and trunk rewrites, shared calling codes)
REGIONS = sorted(
    {"GB", "IE", "DE", "FR", "ES", "IT", "NL", "BE", "PT", "AT", "CH", "SE", "NO", "DK", "PL", "US", "CA", "AU"}
    | {"JE", "GG", "IM", "BR", "AR", "MX", "RU", "KZ", "IN", "CN", "JP", "SM", "VA", "CI", "MC", "HU", "FI"}
)
_CODES = sorted({phonenumbers.country_code_for_region(r) for r in REGIONS} | {1, 7, 800, 881, 999, 0})
_SEPARATORS = ["", " ", "  ", "-", " - ", ".", "/", "(", ")", "\u00a0", "\u2011"]

digits = st.text(alphabet="0123456789", min_size=0, max_size=14)


@st.composite
def typed_numbers(draw: st.DrawFn) -> str:
    """A number as a person or a form writes it."""
    body = draw(digits)
    # cut into groups with separators, maybe wrap a group in parentheses
    parts: list[str] = []
    i = 0
    while i < len(body):
        size = draw(st.integers(1, 5))
        group = body[i : i + size]
        if draw(st.booleans()) and draw(st.integers(0, 4)) == 0:
            group = f"({group})"
        parts.append(group)
        i += size
    text = ""
    for part in parts:
        text += part + (draw(st.sampled_from(_SEPARATORS)) if draw(st.booleans()) else "")
    prefix = draw(
        st.sampled_from(
            [
                "",
                "",
                "0",
                "00",
                "+",
                "+",
                "++",
                "(0)",
                "011",
                "8",
                "1",
                " ",
                "(",
                "tel:",
                "+0",
            ]
        )
    )
    code = draw(st.sampled_from(_CODES))
    if prefix.startswith("+") or prefix in ("00", "011") or draw(st.integers(0, 5)) == 0:
        head = f"{prefix}{code}{draw(st.sampled_from(['', ' ', '-', ' (0) ', '(0)']))}"
    else:
        head = prefix
    suffix = draw(st.sampled_from(["", "", "", " ext. 12", " x 3", "#", " #12", ";ext=1", " ", ")", "-", "abc"]))
    text = head + text + suffix
    if draw(st.integers(0, 9)) == 0:
        # unicode digits (Arabic-Indic, full-width) in place of some ASCII ones
        table = str.maketrans("0123456789", draw(st.sampled_from(["٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９"])))
        text = text.translate(table)
    return text


regions = st.one_of(st.sampled_from(REGIONS), st.sampled_from(["gb", "XX", "ZZ", "001", ""]), st.none())


def _agrees(number: str, region: str | None) -> None:
    fast = e164_fast(number, region)
    if fast is not DEFER:
        assert fast == e164(number, region), (number, region)


@settings(max_examples=examples(1500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_numbers(), regions)
@example("07700 900123", "GB")
@example("+44 (0) 20 7946 0958", "GB")
@example("0044 20 7946 0958", "GB")
@example("+390612345678", "IT")
@example("+0207946095", "GB")
@example("+999 1234567", "GB")
@example("447700900123", "GB")
@example("1 800 555 0100", "US")
def test_fast_path_is_phonenumbers_or_defers(number: str, region: str | None) -> None:
    _agrees(number, region)


@settings(max_examples=examples(1000), deadline=None)
@given(st.text(alphabet="0123456789 +-()x#.abc\u0660\u00a0", max_size=24), regions)
def test_fast_path_on_garbage(number: str, region: str | None) -> None:
    _agrees(number, region)


@settings(max_examples=examples(1000), deadline=None)
@given(st.sampled_from(REGIONS), st.data())
def test_fast_path_on_valid_numbers_of_each_region(region: str, data: st.DataObject) -> None:
    # real numbers from the metadata's examples, reformatted the ways people write them
    kind = data.draw(st.sampled_from([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]))
    sample = phonenumbers.example_number_for_type(region, kind)
    if sample is None:
        return
    style = data.draw(
        st.sampled_from(
            [
                phonenumbers.PhoneNumberFormat.E164,
                phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                phonenumbers.PhoneNumberFormat.NATIONAL,
            ]
        )
    )
    text = phonenumbers.format_number(sample, style)
    in_region = data.draw(st.sampled_from([region, *REGIONS]))
    _agrees(text, in_region)


@pytest.mark.parametrize(
    ("number", "region", "expected"),
    [
        # hand-written: the sample generator's shapes
        ("07700 900123", "GB", "+447700900123"),
        ("(020) 7946 0958", "GB", "+442079460958"),
        ("+44 20 7946 0958", "GB", "+442079460958"),
        ("+447700900123", "DE", "+447700900123"),
        ("0151 12345678", "DE", "+4915112345678"),
        ("085 1234567", "IE", "+353851234567"),
        ("+39 06 1234 5678", "IT", "+390612345678"),
    ],
)
def test_fast_path_answers_the_common_shapes(number: str, region: str, expected: str) -> None:
    # the fast path answers these itself (it does not defer) and gets them right
    assert e164_fast(number, region) == expected


@pytest.mark.parametrize(
    ("number", "region", "expected"),
    [
        ("0000000000", "GB", None),  # placeholder
        ("00000 000000", "GB", None),
        ("n/a", "GB", None),
        ("   ", "GB", None),
        ("+44 (0) 20 7946 0958", "GB", "+442079460958"),  # deferred: phonenumbers strips the (0)
        ("0044 20 7946 0958", "GB", "+442079460958"),  # deferred: IDD
        ("+44 20 7946 0958 ext. 12", "GB", "+442079460958"),  # deferred: extension
        ("١٢٣", "GB", None),
    ],
)
def test_e164_one_agrees_on_deferred_and_junk(number: str, region: str, expected: str | None) -> None:
    assert e164_one(number, region) == expected
    assert e164(number, region) == expected


def test_e164_many_keeps_order_and_works_each_pair_once() -> None:
    numbers = ["07700 900123", "07700 900123", None, "07700 900123", "+353 85 1234567", "0151 12345678"]
    regions = ["GB", "GB", "GB", "IE", None, "GB"]
    # the same text read in Ireland is an Irish number; a German mobile read in GB is impossible
    assert e164_many(numbers, regions) == [
        "+447700900123",
        "+447700900123",
        None,
        "+3537700900123",
        "+353851234567",
        None,
    ]


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.one_of(typed_numbers(), st.none(), st.just("07700 900123")), regions), max_size=30))
def test_e164_array_is_phonenumbers_row_by_row(pairs: list[tuple[str | None, str | None]]) -> None:
    # the Arrow path: shapes told apart by RE2, answers shared by every way of writing a number
    numbers = pa.array([n for n, _ in pairs], pa.string())
    regions_ = pa.array([r for _, r in pairs], pa.string())
    assert e164_array(numbers, regions_).to_pylist() == [e164(n, r) for n, r in pairs]


def _digits_answers(triples: list[tuple[str, bool, str | None]]) -> list[object]:
    answers, deferred = e164_digits_array(
        pa.array([d for d, _, _ in triples], pa.string()),
        pa.array([p for _, p, _ in triples], pa.bool_()),
        pa.array([r for _, _, r in triples], pa.string()),
    )
    return [DEFER if d else a for a, d in zip(answers.to_pylist(), deferred.to_pylist())]


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(digits, st.booleans(), regions), max_size=40))
def test_fast_path_over_arrays_is_the_fast_path_row_by_row(triples: list[tuple[str, bool, str | None]]) -> None:
    # the metadata patterns run by RE2 over the distinct numbers of a column: the same answers,
    # DEFER where the row-by-row fast path defers
    assert _digits_answers(triples) == [e164_digits(d, p, r) for d, p, r in triples]


def test_fast_path_over_arrays_on_every_region_s_example_numbers() -> None:
    # each region's example numbers written bare, with a trunk 0, with the calling code (with and
    # without +, after an IDD 00) and one digit short or long, read in their own region
    triples = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        example_number = phonenumbers.example_number(region)
        if example_number is None:
            continue
        national, code = str(example_number.national_number), str(example_number.country_code)
        for text, plus in [
            (national, False),
            ("0" + national, False),
            (code + national, True),
            (code + national, False),
            ("00" + code + national, False),
            (code + "0" + national, True),
            (national[:-1], False),
            (national + "1", False),
        ]:
            triples.append((text, plus, region))
    expected = [e164_digits(d, p, r) for d, p, r in triples]
    assert sum(e is not DEFER for e in expected) > len(triples) // 3
    assert _digits_answers(triples) == expected
