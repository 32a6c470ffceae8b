"""``initcap`` and ``substring_index`` translated to DuckDB, against Spark 4.2's answers.

Every expected value below was typed from Spark's own output (``SELECT initcap(w)``,
``substring_index(s, d, n)`` on a local Spark 4.2 session, ICU case mappings on as by default).
"""

from __future__ import annotations

from datetime import datetime, timezone

import duckdb
import pytest

from lakecdp.sqldialect.spark_functions import register_spark_functions
from lakecdp.sqldialect.translate import condition_to_duckdb

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)

INITCAP = [
    ("john smith", "John Smith"),
    ("JOHN SMITH", "John Smith"),
    ("o'brien", "O'brien"),  # an apostrophe starts no word
    ("mary-jane o'neil", "Mary-jane O'neil"),  # nor does a hyphen
    ("  two  spaces ", "  Two  Spaces "),
    ("x\ty\tz", "X\ty\tz"),  # nor a tab
    ("a\u00a0b", "A\u00a0b"),  # nor a no-break space
    ("a\u3000b", "A\u3000b"),
    ("1abc 2DEF", "1abc 2def"),  # a digit takes the word's capital
    ("a.b,c", "A.b,c"),
    ("", ""),
    (" ", " "),
    ("élodie ÉCOLE", "Élodie École"),
    ("ÿ", "Ÿ"),
    ("straße", "Straße"),
    ("ß ßa", "Ss Ssa"),  # full title case at a word's start
    ("ﬁsh ﬂy", "Fish Fly"),
    ("ŉ", "ʼN"),
    ("\u01f0", "J\u030c"),
    ("ǆemal", "ǅemal"),  # title case, not upper case
    ("DŽ dž", "Dž Dž"),
    ("ǅ ǆ Ǆ", "ǅ ǅ ǅ"),
    ("\u0130stanbul", "\u0130stanbul"),  # İ is its own title case
    ("İZMIR ﬁsh", "İzmir Fish"),
    ("i\u0307x", "I\u0307x"),  # i + combining dot: only the i is cased
    ("ΣΊΣΥΦΟΣ", "Σίσυφος"),  # a final sigma at a word's end
    ("ΑΣ ΑΣ. Σ ΣΑ", "Ας Ας. Σ Σα"),
    ("ΑΣ'Α", "Ασ'α"),  # an apostrophe is skipped looking for the next letter
    ("ΌΣΟΣ ΣΟΣ", "Όσος Σος"),
    ("😀abc 😀ABC", "😀abc 😀abc"),
    (None, None),
]

SUBSTRING_INDEX = [
    ("a,b,c", ",", 1, "a"),
    ("a,b,c", ",", -1, "c"),
    ("a,b,c", ",", 2, "a,b"),
    ("a,b,c", ",", -2, "b,c"),
    ("a,b,c", ",", 0, ""),
    ("a,b,c", ",", 5, "a,b,c"),  # fewer delimiters than asked: the whole text
    ("a,b,c", ",", -5, "a,b,c"),
    ("abc", ",", 1, "abc"),  # no delimiter
    ("abc", ",", -1, "abc"),
    ("", ",", 1, ""),
    ("", ",", -1, ""),
    ("a,b", "", 1, ""),  # an empty delimiter
    ("a,,b", ",", 2, "a,"),
    ("a,,b", ",", -2, ",b"),
    (",a", ",", 1, ""),
    ("a,", ",", -1, ""),
    ("aXXbXXc", "XX", -2, "bXXc"),
    ("aaa", "aa", 1, ""),
    ("aaa", "aa", -1, ""),
    ("aaaa", "aa", 2, "a"),  # occurrences overlap
    ("aaaa", "aa", -2, "a"),
    ("é,ü,中", ",", -2, "ü,中"),
    ("a😀b😀c", "😀", -1, "c"),
    ("SMITH, John", ",", -1, " John"),
    ("SMITH, John", ",", 1, "SMITH"),
    (None, ",", 1, None),
    ("a,b", None, 1, None),
]


@pytest.fixture(scope="module")
def con():
    connection = duckdb.connect()
    register_spark_functions(connection)
    yield connection
    connection.close()


def _run(con, expression: str, *values: object) -> object:
    names = ", ".join(f"$v{i} AS v{i}" for i in range(len(values)))
    sql = condition_to_duckdb(expression, as_of=AS_OF)
    return con.execute(f"SELECT {sql} FROM (SELECT {names})", {f"v{i}": v for i, v in enumerate(values)}).fetchone()[0]


@pytest.mark.parametrize(("text", "expected"), INITCAP)
def test_initcap_gives_sparks_answer_on_duckdb(con, text, expected):
    assert _run(con, "initcap(CAST(v0 AS STRING))", text) == expected


@pytest.mark.parametrize(("text", "delimiter", "count", "expected"), SUBSTRING_INDEX)
def test_substring_index_gives_sparks_answer_on_duckdb(con, text, delimiter, count, expected):
    expression = f"substring_index(CAST(v0 AS STRING), CAST(v1 AS STRING), {count})"
    assert _run(con, expression, text, delimiter) == expected


def test_the_translation_calls_the_spark_functions():
    assert condition_to_duckdb("initcap(s)", as_of=AS_OF) == "LAKECDP_INITCAP(s)"
    assert condition_to_duckdb("substring_index(s, ',', -1)", as_of=AS_OF) == "LAKECDP_SUBSTRING_INDEX(s, ',', -1)"
