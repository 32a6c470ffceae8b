"""Spark string functions DuckDB has no equal of, as Python functions a DuckDB connection can call.

:func:`lakecdp.sqldialect.spark_semantics.spark_semantics` rewrites ``initcap(s)`` to
``lakecdp_initcap(s)`` and ``substring_index(s, d, n)`` to ``lakecdp_substring_index(s, d, n)``;
a connection that runs translated SQL registers them first (:func:`register_spark_functions`).
Each follows Spark 4.2's own code for the default (UTF8_BINARY) collation:

- ``initcap`` (``CollationAwareUTF8String.toTitleCaseICU``, Spark's default with
  ``spark.sql.icu.caseMappings.enabled``): a word starts at the beginning and after an ASCII space
  only (not after a tab, a no-break space, a hyphen or an apostrophe: ``Mary-jane O'neil``); its
  first code point takes its full title case (``ﬁ`` -> ``Fi``, ``ǆ`` -> ``ǅ``, ``ŉ`` -> ``ʼN``),
  every other code point its simple lower case, ``İ`` becomes ``i̇`` and ``Σ`` a final ``ς`` at the
  end of a cased word. (Python's Unicode tables stand in for ICU's: a letter new in a Unicode
  version Python does not know yet keeps its case.)
- ``substring_index`` (``UTF8String.subStringIndex``): the text before the n-th delimiter from the
  left (n > 0) or after the n-th from the right (n < 0), occurrences overlapping (``'aaaa'``,
  ``'aa'``, 2 -> ``'a'``); the whole text when there are fewer; ``''`` for an empty delimiter or
  n = 0; NULL when any argument is NULL.

Example:
    >>> spark_initcap("SMITH-JONES o'brien")
    "Smith-jones O'brien"
    >>> spark_substring_index("SMITH, John", ",", -1)
    ' John'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

_CAPITAL_I_WITH_DOT = "\u0130"
_CAPITAL_SIGMA = "\u03a3"


def spark_initcap(text: str | None) -> str | None:
    """Spark's ``initcap(text)``."""
    if text is None:
        return None
    # the lower case of the text with every character kept in place (İ is the one letter whose lower
    # case is two code points; I has the same case properties): Σ's final / non-final form is read
    # there, with the rule Spark applies (cased letter before, none after, case-ignorables skipped)
    in_place = text.replace(_CAPITAL_I_WITH_DOT, "I").lower()
    out = []
    new_word = True
    for position, char in enumerate(text):
        if new_word:
            out.append(char.title())
        elif char == _CAPITAL_I_WITH_DOT:
            out.append("i\u0307")
        elif char == _CAPITAL_SIGMA:
            out.append(in_place[position])
        else:
            out.append(char.lower())
        new_word = char == " "
    return "".join(out)


def spark_substring_index(text: str | None, delimiter: str | None, count: int | None) -> str | None:
    """Spark's ``substring_index(text, delimiter, count)``."""
    if text is None or delimiter is None or count is None:
        return None
    if delimiter == "" or count == 0:
        return ""
    if count > 0:
        found = -1
        for _ in range(count):
            found = text.find(delimiter, found + 1)
            if found < 0:
                return text
        return text[:found]
    found = len(text) - len(delimiter) + 1
    for _ in range(-count):
        # the last occurrence starting before `found` (Spark's rfind from found - 1)
        found = text.rfind(delimiter, 0, found - 1 + len(delimiter)) if found > 0 else -1
        if found < 0:
            return text
    return text[found + len(delimiter) :]


def register_spark_functions(con: duckdb.DuckDBPyConnection) -> None:
    """Make ``lakecdp_initcap`` and ``lakecdp_substring_index`` callable on ``con`` (before it is locked)."""
    # null_handling="special": the functions are called with NULLs (and answer NULL themselves)
    con.create_function("lakecdp_initcap", spark_initcap, ["VARCHAR"], "VARCHAR", null_handling="special")  # type: ignore[call-overload]  # the mode as text works
    con.create_function(
        "lakecdp_substring_index",
        spark_substring_index,
        ["VARCHAR", "VARCHAR", "BIGINT"],
        "VARCHAR",
        null_handling="special",  # type: ignore[call-overload]
    )
