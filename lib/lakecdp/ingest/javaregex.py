"""Java regular expressions (Spark's ``rlike`` and ``regexp_replace``) run in Python as Java runs them.

The ingest's patterns are written for Spark (``\\p{Z}``, ``\\p{Cc}``); the HTTP intake's validator
and the embedded engine's cleaners run them in Python with the ``regex`` package.
"""

from __future__ import annotations

import regex

#: Java's \s: ASCII whitespace only (the ``regex`` package's \s is Unicode's)
_JAVA_SPACE = r"\t\n\x0B\f\r\x20"
#: Java's $ (no MULTILINE): the end of input, or before a final line terminator
_JAVA_END = r"(?=(?:\r\n|[\n\r\u0085\u2028\u2029])?\Z)"


def java_regex(pattern: str) -> regex.Pattern[str]:
    """Compile a Java regular expression (Spark's ``rlike``) so that it matches as Java does.

    The ``regex`` package reads Java's Unicode classes (``\\p{Z}``, ``\\p{Cc}``) as Java does;
    two constructs differ and are rewritten: ``\\s`` (ASCII whitespace in Java) and an unescaped
    ``$`` outside a character class (Java also matches before a final ``\\r``, ``\\u0085``,
    ``\\u2028``...). Use :meth:`~regex.Pattern.search` (``rlike`` is a find, not a full match).
    Other Java-only syntax (possessive classes, ``.`` and line terminators) is not translated:
    the ingest's patterns do not use it.

    Example:
        >>> bool(java_regex(r"^[^\\s\\p{Z}]+$").search("a\u00a0b"))
        False
    """
    out: list[str] = []
    in_class = False
    class_body = 0  # where the current class's members start ("[]" and "[^]" hold a literal ])
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escaped = pattern[i : i + 2]
            if escaped == r"\s":
                out.append(_JAVA_SPACE if in_class else f"[{_JAVA_SPACE}]")
            else:
                out.append(escaped)
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            class_body = i + 2 if pattern[i + 1 : i + 2] == "^" else i + 1
        elif char == "]" and in_class and i > class_body:
            in_class = False
        out.append(_JAVA_END if char == "$" and not in_class else char)
        i += 1
    return regex.compile("".join(out), regex.VERSION0)
