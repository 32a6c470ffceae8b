"""Conformance of the two segment engines: every function the segment guard allows, run on Spark
and on the embedded engine (DuckDB after the dialect layer) over nulls, NaN, infinities, extremes
and leap days (issue #14 item 3).

Spark is the oracle (segment SQL is Spark SQL, run in ANSI mode). Each expression is declared
with what the embedded engine does with it:

* ``same``    — the same values row for row (or both engines stop on the same input);
* ``refused`` — the embedded engine refuses the segment before it runs, naming the function
  (not translated, or known to differ: lakecdp.sqldialect.spark_semantics.DIVERGENT);
* ``stops``   — on an edge value the embedded engine stops the run where Spark gives a value
  (an error, never a silently different member list);
* ``differs`` — a documented difference on edge values only (docs/segments.md lists each).

The fast tests check the rewrites of lakecdp.sqldialect.spark_semantics against values written by
hand from Spark's documented behaviour; the slow test runs every declared expression on both.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timezone
from decimal import Decimal

import pyarrow as pa
import pytest

from lakecdp.sqldialect.translate import query_to_duckdb
from lakecdp.segments.duck_guard import check_duckdb_select
from lakecdp.segments.embedded import EmbeddedSettings, locked_connection
from lakecdp.segments.guard import SqlRefused, check_query

AS_OF = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
SCHEMA = "customer_id string, i int, l bigint, d double, s string, ts timestamp, dt date, arr array<bigint>, js string"
UTC = timezone.utc
ROWS = [
    ("c1", 7, 10_000_000_000, 2.5, "Hello World", datetime(2026, 11, 1, 10, 30, tzinfo=UTC), date(2026, 2, 28),
     [3, 1, 2], '{"a":{"b":1},"c":[1,2]}'),
    ("c2", None, None, None, None, None, None, None, None),
    ("c3", -3, -9223372036854775807, float("nan"), "ÄöÜ  spaces ", datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
     date(2024, 12, 31), [], "[]"),
    ("c4", 0, 0, 1e308, "", datetime(1970, 1, 1, tzinfo=UTC), date(1970, 1, 1), [None, 5], "not json"),
    ("c5", 2147483647, 9223372036854775807, -0.5, "a,b,,c", datetime(2026, 10, 25, 1, 0, tzinfo=UTC), date(2026, 1, 4),
     [2, 2, 9], '{"a":{"b":"x"},"c":[]}'),
    ("c6", -7, 27, 2.7, "2.7", datetime(2026, 11, 1, 0, 0, tzinfo=UTC), date(2026, 11, 1), [7], "[1,2,3]"),
]  # fmt: skip


def arrow_rows() -> pa.Table:
    columns = list(zip(*ROWS))
    return pa.table(
        {
            "customer_id": pa.array(columns[0], pa.string()),
            "i": pa.array(columns[1], pa.int32()),
            "l": pa.array(columns[2], pa.int64()),
            "d": pa.array(columns[3], pa.float64()),
            "s": pa.array(columns[4], pa.string()),
            "ts": pa.array(columns[5], pa.timestamp("us", tz="UTC")),
            "dt": pa.array(columns[6], pa.date32()),
            "arr": pa.array(columns[7], pa.list_(pa.int64())),
            "js": pa.array(columns[8], pa.string()),
        }
    )


@pytest.fixture(scope="module")
def duck():
    con = locked_connection({"customers": arrow_rows()}, EmbeddedSettings())
    yield con
    con.close()


def _duck_sql(expression: str) -> str:
    return query_to_duckdb(f"SELECT customer_id, {expression} AS v FROM customers ORDER BY customer_id", as_of=AS_OF)


def on_duckdb(con, expression: str) -> tuple[str, object]:
    """("refused", message) | ("error", message) | ("ok", values by customer)."""
    try:
        text = _duck_sql(expression)
        check_duckdb_select(con, text)
    except SqlRefused as exc:
        return "refused", str(exc)
    try:
        return "ok", [_plain(row[1]) for row in con.execute(text).fetchall()]
    except Exception as exc:  # noqa: BLE001 - the engine's own error is the outcome
        return "error", str(exc).splitlines()[0]


def _plain(value: object) -> object:
    """One comparable form for both engines' Python values."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return float(f"{value:.12g}")
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if hasattr(value, "asDict"):
        return {k: _plain(v) for k, v in value.asDict().items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -- fast: the rewrites, against values written by hand ---------------------------------------------

# expression -> values for c1..c6 as Spark documents them
REWRITTEN = {
    # Spark: Sunday 1 .. Saturday 7 (2026-02-28 is a Saturday, 2024-12-31 a Tuesday, 1970-01-01 a
    # Thursday, 2026-01-04 a Sunday, 2026-11-01 a Sunday); weekday: Monday 0 .. Sunday 6
    "dayofweek(dt)": [7, None, 3, 5, 1, 1],
    "extract(DOW FROM dt)": [7, None, 3, 5, 1, 1],
    "weekday(dt)": [5, None, 1, 3, 6, 6],
    # a double truncates towards zero
    "cast(d * 10 as int)": [25, None, "stops", "stops", -5, 27],
    "cast(d as bigint) + 0": [2, None, "stops", "stops", 0, 2],
    # logarithms of non-positive numbers are NULL; NaN stays NaN
    "ln(i)": [math.log(7), None, None, None, math.log(2147483647), None],
    "log(2.0, i)": [math.log2(7), None, None, None, math.log2(2147483647), None],
    "sign(d)": [1.0, None, "NaN", 1.0, -1.0, 1.0],
    "isnan(d)": [False, False, True, False, False, False],
    # whole units elapsed; seconds floored
    "timestampdiff(DAY, ts, timestamp'2026-12-01 00:00:00')": [29, None, 1005, 20788, 36, 30],
    "unix_seconds(ts)": [1793529000, None, 1709251199, 0, 1792890000, 1793491200],
    # position 0 is position 1
    "substring(s, 0, 2)": ["He", None, "Äö", "", "a,", "2."],
    # not found is 0
    "array_position(arr, 2)": [3, None, 0, 0, 1, 0],
    # only a JSON array has a length
    "json_array_length(js)": [None, None, 0, None, None, 3],
    # answers a DATE
    "date_add(dt, 3)": [
        date(2026, 3, 3),
        None,
        date(2025, 1, 3),
        date(1970, 1, 4),
        date(2026, 1, 7),
        date(2026, 11, 4),
    ],
    "add_months(dt, 1)": [
        date(2026, 3, 28),
        None,
        date(2025, 1, 31),
        date(1970, 2, 1),
        date(2026, 2, 4),
        date(2026, 12, 1),
    ],
    "trunc(dt, 'month')": [
        date(2026, 2, 1),
        None,
        date(2024, 12, 1),
        date(1970, 1, 1),
        date(2026, 1, 1),
        date(2026, 11, 1),
    ],
    # a timestamp as text has no zone; its fraction is trimmed
    "cast(ts as string)": [
        "2026-11-01 10:30:00",
        None,
        "2024-02-29 23:59:59.999999",
        "1970-01-01 00:00:00",
        "2026-10-25 01:00:00",
        "2026-11-01 00:00:00",
    ],
}


@pytest.mark.parametrize("expression", sorted(REWRITTEN))
def test_rewritten_functions_give_sparks_values_on_duckdb(duck, expression):
    expected = REWRITTEN[expression]
    if "stops" in expected:
        assert on_duckdb(duck, expression)[0] == "error"
        kept = [n for n, value in enumerate(expected) if value != "stops"]
        picked = ", ".join(f"'c{n + 1}'" for n in kept)
        status, values = on_duckdb(duck, f"CASE WHEN customer_id IN ({picked}) THEN {expression} END")
        assert status == "ok", values
        assert [values[n] for n in kept] == [_plain(expected[n]) for n in kept]
        return
    assert on_duckdb(duck, expression) == ("ok", [_plain(v) for v in expected])


@pytest.mark.parametrize(
    "expression, message",
    [
        ("i / 0", "DIVIDE_BY_ZERO"),
        ("cast(s as int)", "CAST_INVALID_INPUT"),
        ("to_date(s)", "invalid date field format"),
        ("cast(d as string)", "cast of a double to string is not supported on the embedded engine"),
    ],
)
def test_spark_stops_so_the_embedded_engine_stops(duck, expression, message):
    status, text = on_duckdb(duck, expression)
    assert (status, message in str(text)) == ("error", True), text


def test_try_forms_give_null_where_spark_does(duck):
    assert on_duckdb(duck, "try_cast(s as int)") == ("ok", [None] * 6)  # '2.7' is not an integer
    assert on_duckdb(duck, "try_divide(i, 0)") == ("ok", [None] * 6)


@pytest.mark.parametrize(
    "expression", ["array_distinct(arr)", "to_json(named_struct('x', i))", "months_between(ts, dt)"]
)
def test_functions_known_to_differ_are_refused_naming_the_function(duck, expression):
    status, message = on_duckdb(duck, expression)
    assert status == "refused"
    assert "is not supported on the embedded engine" in message


# -- slow: every allowed function on both engines, Spark the oracle ---------------------------------

SAME = """
abs(i)
abs(d)
acos(d / 1e308)
asin(d / 1e308)
atan(d)
atan2(d, 2.0)
cos(d)
exp(i)
greatest(i, 1)
least(d, 1.0)
ln(d)
log(2.0, d)
log10(d)
log2(d)
mod(i, 4)
i % 4
pow(d, 2)
power(i, 2)
round(d)
round(d, 1)
round(2.5)
round(-2.5)
sign(d)
sign(i)
signum(i)
sqrt(d)
i div 2
l div 3
try_divide(i, 0)
i / 2
i / 0
l + 1
i + 1
i * 2
d * 2
d / 0
cast(d as int)
cast(d as bigint)
cast(s as int)
try_cast(s as int)
try_cast(d as int)
cast(l as int)
cast(i as bigint)
cast(i as string)
cast(ts as string)
cast(dt as string)
cast(ts as date)
cast(dt as timestamp)
cast(s as double)
cast(i as boolean)
cast(i as double)
cast(d as decimal(10,2))
cast(concat(s, '') as int)
cast(concat(' 12 ', '') as int)
if(i > 0, 'pos', 'neg')
ifnull(s, 'x')
nullif(i, 0)
nvl(s, 'x')
nvl2(s, 1, 2)
coalesce(s, 'x')
isnan(d)
equal_null(s, 'Hello World')
i between 0 and 7
not (i > 0)
lower(s)
upper(s)
lcase(s)
ucase(s)
trim(s)
ltrim(s)
rtrim(s)
length(s)
char_length(s)
character_length(s)
substring(s, 2, 3)
substr(s, -3)
substring(s, 0, 2)
substring(s, i, 2)
left(s, 3)
right(s, 3)
concat(s, '!')
concat(s, null)
concat_ws('-', s, 'x')
replace(s, 'l', 'L')
regexp_like(s, '^H.*d$')
regexp_extract(s, '(\\w+) (\\w+)', 2)
s rlike 'o W'
regexp_replace(s, '[aeiou]', '_')
s like 'H%'
s ilike 'h%'
startswith(s, 'He')
endswith(s, 'ld')
contains(s, 'o W')
instr(s, 'o')
locate('o', s)
position('o', s)
lpad(s, 14, '*')
rpad(s, 14, '*')
split_part(s, ',', 2)
reverse(s)
repeat(s, 2)
md5(s)
sha1(s)
sha2(s, 256)
sha(s)
ascii(s)
chr(i + 65)
char(i + 65)
date_add(dt, 3)
date_sub(dt, 3)
dateadd(dt, 1)
datediff(dt, date'2026-01-01')
date_diff(dt, date'2026-01-01')
add_months(dt, 1)
date_trunc('month', ts)
date_trunc('week', ts)
trunc(dt, 'month')
to_date(s)
to_date('2026-03-04')
to_date(s, 'yyyy-MM-dd')
to_timestamp('2026-03-04 05:06:07')
date_format(ts, 'yyyy-MM-dd HH:mm')
year(ts)
quarter(dt)
month(dt)
day(dt)
dayofmonth(dt)
dayofweek(dt)
dayofyear(dt)
weekday(dt)
weekofyear(dt)
hour(ts)
minute(ts)
second(ts)
last_day(dt)
next_day(dt, 'Mon')
make_date(2026, i, 1)
make_timestamp(2026, 1, 2, 3, 4, 5.5)
make_interval(0, 0, 0, i)
timestampdiff(DAY, ts, timestamp'2026-12-01 00:00:00')
datepart('YEAR', ts)
date_part('MONTH', ts)
extract(DOW FROM dt)
extract(YEAR FROM ts)
unix_date(dt)
unix_seconds(ts)
date_from_unix_date(i)
ts - interval 2 days
ts > timestamp'2026-01-01 00:00:00' - interval 1 hour
array(i, 2)
array_join(transform(arr, x -> cast(x as string)), ',')
array_max(arr)
array_min(arr)
array_position(arr, 2)
array_size(arr)
array_sort(arr)
size(arr)
cardinality(arr)
try_element_at(arr, 5)
slice(arr, 1, 2)
sort_array(arr)
transform(arr, x -> x * 2)
filter(arr, x -> x > 1)
aggregate(arr, 0L, (acc, x) -> acc + x)
reduce(arr, 0L, (acc, x) -> acc + x)
array_compact(arr)
map('a', i)
map_keys(map('a', i))
map_values(map('a', i))
map_entries(map('a', i))
map_from_arrays(array('a'), array(i))
struct(i, s)
named_struct('x', i)
json_array_length(js)
double(i)
int(d)
boolean(i)
string(i)
date(s)
timestamp(dt)
"""

REFUSED = """
pmod(i, 4)
bround(d)
negative(i)
positive(i)
try_add(i, 1)
try_subtract(i, 1)
try_multiply(i, 2)
isnull(s)
isnotnull(s)
nanvl(d, 0.0)
btrim(s)
split(s, ',')
initcap(s)
format_number(d, 2)
hash(s)
xxhash64(s)
crc32(s)
try_to_timestamp(s)
try_to_date(s, 'yyyy-MM-dd')
unix_timestamp(ts)
to_unix_timestamp(ts)
ts + make_dt_interval(i, 0, 0, 0)
dt + make_ym_interval(0, i)
timestamp_seconds(l / 10)
timestamp_millis(i)
arrays_overlap(arr, array(2, 5))
array_union(arr, array(4))
array_repeat(i, 2)
sort_array(arr, false)
sequence(1, 3)
exists(arr, x -> x > 2)
forall(arr, x -> x > 0)
zip_with(arr, arr, (a, b) -> a + b)
map_contains_key(map('a', i), 'a')
map_filter(map('a', i), (k, v) -> v > 0)
get_json_object(js, '$.a.b')
decimal(i)
bigint(d)
smallint(i)
tinyint(i)
array_contains(arr, 2)
array_distinct(arr)
array_except(arr, array(2))
array_intersect(arr, array(2, 3))
array_remove(arr, 2)
flatten(array(arr, arr))
element_at(arr, 1)
months_between(ts, timestamp'2026-01-01 00:00:00')
from_unixtime(l / 10000)
to_json(named_struct('x', i, 's', s))
"""

# Spark gives a value on an edge input where the embedded engine stops the run
STOPS = """
ceil(d)
ceiling(d)
floor(d)
float(d)
cast(d as string)
string(d)
"""

# documented silent differences, on edge inputs only (docs/segments.md)
DIFFERS = {
    "arr[0]": "an index out of bounds: Spark stops, DuckDB answers NULL",
    "dt - interval 30 days": "a date minus an interval is a DATE in Spark, a timestamp in DuckDB (same instant)",
    "timestampadd(HOUR, i, ts)": "a result beyond year 9999: Spark stops, DuckDB answers it",
}

DECLARED = {
    **{e: "same" for e in SAME.strip().splitlines()},
    **{e: "refused" for e in REFUSED.strip().splitlines()},
    **{e: "stops" for e in STOPS.strip().splitlines()},
    **{e: "differs" for e in DIFFERS},
}


def test_every_function_on_the_spark_allow_list_is_declared():
    """A function added to the guard's allow-list must get a conformance case here."""
    import re

    from lakecdp.segments.guard import ALLOWED_FUNCTIONS

    called = {name.lower() for e in DECLARED for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", e)}
    elsewhere = (
        "avg count count_if max min sum mean stddev stddev_pop stddev_samp variance var_pop var_samp median "
        "percentile percentile_approx approx_count_distinct any bool_and bool_or every some first first_value "
        "last last_value max_by min_by collect_list collect_set array_agg row_number rank dense_rank percent_rank "
        "ntile lag lead cume_dist nth_value grouping grouping_id explode explode_outer posexplode "
        "posexplode_outer inline inline_outer current_date curdate current_timestamp now localtimestamp "
        "iff numeric varchar binary between div like ilike rlike"
    ).split()
    # aggregates, windows and generators are checked by the segment tests on both engines; the clock
    # is bound to the run's as-of (test_segments_duck_guard); iff is not a function of Spark 4.2 (Spark
    # refuses it); numeric / varchar / binary are type names; between, div, like, ilike, rlike are
    # written as operators in the cases
    missing = sorted(ALLOWED_FUNCTIONS - called - set(elsewhere))
    assert missing == [], f"allowed functions without a conformance case: {missing}"


# where Spark stops on one of ROWS (overflow, malformed input, out of bounds): run one to a query
# so that the groups of the others do not stop (a group that stops anyway is split: only slower)
SPARK_STOPS = frozenset(
    """
i / 0
l + 1
i + 1
i * 2
d / 0
cast(d as int)
cast(d as bigint)
cast(s as int)
cast(l as int)
cast(s as double)
cast(d as decimal(10,2))
cast(concat(s, '') as int)
chr(i + 65)
char(i + 65)
to_date(s)
to_date(s, 'yyyy-MM-dd')
make_date(2026, i, 1)
make_interval(0, 0, 0, i)
ts + make_dt_interval(i, 0, 0, 0)
dt + make_ym_interval(0, i)
timestampadd(HOUR, i, ts)
timestamp_seconds(l / 10)
date_from_unix_date(i)
element_at(arr, 1)
arr[0]
int(d)
bigint(d)
smallint(i)
tinyint(i)
date(s)
""".strip().splitlines()
)


def _spark_outcomes(spark, expressions: list[str]) -> dict[str, tuple[str, object]]:
    """Each expression's Spark outcome: many to a query (one Spark job, rows sorted here), a group
    that stops split in halves until the expression that stops is alone."""
    spark.createDataFrame(ROWS, SCHEMA).createOrReplaceTempView("customers")
    outcomes: dict[str, tuple[str, object]] = {}

    def run(group: list[str]) -> None:
        columns = ", ".join(f"{e} AS v{n}" for n, e in enumerate(group))
        try:
            rows = sorted(spark.sql(f"SELECT customer_id, {columns} FROM customers").collect(), key=lambda r: r[0])
        except Exception as exc:  # noqa: BLE001 - Spark stopping is an outcome
            if len(group) == 1:
                outcomes[group[0]] = ("error", str(exc).splitlines()[0])
                return
            run(group[: len(group) // 2])
            run(group[len(group) // 2 :])
            return
        for n, expression in enumerate(group):
            outcomes[expression] = ("ok", [_plain(row[f"v{n}"]) for row in rows])

    grouped = [e for e in expressions if e not in SPARK_STOPS]
    for start in range(0, len(grouped), 40):
        run(grouped[start : start + 40])
    for expression in expressions:
        if expression in SPARK_STOPS:
            run([expression])
    return outcomes


@pytest.fixture(scope="module")
def oracle(spark):
    for expression in DECLARED:
        # the author's text passes the Spark guard: every case is a function a segment may call
        check_query(f"SELECT customer_id, {expression} AS v FROM customers ORDER BY customer_id")
    return _spark_outcomes(spark, list(DECLARED))


@pytest.mark.slow
@pytest.mark.parametrize("expression", list(DECLARED))
def test_both_engines_agree_on_every_allowed_function(oracle, duck, expression):
    expected = oracle[expression]
    embedded = on_duckdb(duck, expression)
    declared = DECLARED[expression]
    if declared == "refused":
        assert embedded[0] == "refused", (expression, expected, embedded)
        return
    if declared == "stops":
        assert expected[0] == "ok" and embedded[0] == "error", (expression, expected, embedded)
        return
    agree = expected[0] == embedded[0] and (expected[0] == "error" or expected[1] == embedded[1])
    if declared == "differs":
        assert not agree, f"{expression} now agrees on both engines: declare it 'same'"
        return
    assert agree, (expression, expected, embedded)
