"""The birth-date guard: a cluster never chains two records whose birth dates disagree.

Clusters are connected components, so evidence is transitive: a shop record without a
birth date that matches two people of one household who share a full name and an address
("mei ozturk" born 1942 and 1965) joins them, though each person's own records say
otherwise. Two birth dates *disagree* when no typo explains them: not equal, more than two
typos apart, day and month not swapped, another year or month (the levels the
``date_of_birth`` comparison reads as "same person, mistyped").

Two records whose dates disagree may still be one person's: the model compared the dates
when it scored an edge between two dated records, so a chain of strong edges (deterministic,
or at least ``clustering.weak_link_probability``) *between records with birth dates* vouches
for them (FEBRL's duplicates each carry their own error in the date of one original, and
each links strongly to the original). What does not vouch is a path through records
without a birth date, or through a weak edge: there no comparison saw the two dates. Two
disagreeing records that nothing vouches for are a *conflict*; a cluster holding one is
rebuilt by adding its edges strongest first (ties by record id), skipping an edge that
would put two conflicting records in one piece (flag ``birth_date_conflict``). A record
without a birth date conflicts with no one: it joins the piece it links to most strongly,
or none when it links two conflicting pieces equally strongly (it matches both namesakes
alike: nothing says which one it is).

Only clusters holding a conflict change, and a cluster's pieces depend on its own records
and edges alone, so incremental runs still equal full runs.

Example:
    >>> split_birth_date_conflicts({"a": "a", "b": "a", "s": "a"},
    ...     [("a", "s", 0.999), ("b", "s", 0.998)], {"a": "19650410", "b": "19420923"}, strong=0.99)
    {'a': 'a', 's': 'a', 'b': 'b'}
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from itertools import combinations, groupby
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


def _typos(left: str, right: str) -> int:
    """Damerau-Levenshtein distance (optimal string alignment), as the comparison's
    ``damerau_levenshtein``."""
    previous2: list[int] = []
    previous = list(range(len(right) + 1))
    for i in range(1, len(left) + 1):
        current = [i] + [0] * len(right)
        for j in range(1, len(right) + 1):
            cost = 0 if left[i - 1] == right[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and left[i - 1] == right[j - 2] and left[i - 2] == right[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(right)]


def birth_dates_disagree(left: str, right: str) -> bool:
    """Two ``yyyyMMdd`` birth dates no typo explains: the ``date_of_birth`` comparison's
    "else" level (not equal, more than two typos apart, day and month not swapped, another
    year or month)."""
    if left == right or left[:6] == right[:6]:
        return False
    if left[:4] == right[:4] and left[4:6] == right[6:8] and left[6:8] == right[4:6]:
        return False
    return _typos(left, right) > 2


def split_birth_date_conflicts(
    clusters: Mapping[str, str],
    edges: Iterable[tuple[str, str, float]],
    birth_dates: Mapping[str, str],
    *,
    strong: float,
) -> dict[str, str]:
    """New cluster keys for the records of clusters that hold a birth-date conflict.

    Args:
        clusters: record -> cluster key, for every record.
        edges: ``(record_l, record_r, p)``, the edges clustering followed (deterministic =
            1.0); edges between two clusters are ignored.
        birth_dates: record -> birth date as ``yyyyMMdd`` (records without one left out).
        strong: the probability from which an edge between two dated records vouches for
            their dates (``clustering.weak_link_probability``).

    Returns:
        record -> new key (the smallest record id of its piece), for every record of a
        cluster that splits; records of other clusters are not listed.
    """
    from lakecdp.identity.clustering import _UnionFind  # clustering imports this module

    inside: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    vouched = _UnionFind()  # records with birth dates joined by strong edges between them
    for left, right, p in edges:
        if left == right or clusters[left] != clusters[right]:
            continue
        inside[clusters[left]].append((min(left, right), max(left, right), p))
        if p >= strong and left in birth_dates and right in birth_dates:
            vouched.union(left, right)
    dated: dict[str, list[str]] = defaultdict(list)
    for record in sorted(birth_dates):
        if record in clusters:
            dated[clusters[record]].append(record)
    new_keys: dict[str, str] = {}
    for cluster, records in dated.items():
        conflicts = {
            (a, b)
            for i, a in enumerate(records)
            for b in records[i + 1 :]
            if birth_dates[a] != birth_dates[b]
            and vouched.find(a) != vouched.find(b)
            and birth_dates_disagree(birth_dates[a], birth_dates[b])
        }
        if conflicts:
            new_keys.update(_pieces(inside[cluster], conflicts, birth_dates))
    if new_keys:
        members: dict[str, list[str]] = defaultdict(list)
        for record, key in clusters.items():
            members[key].append(record)
        for cluster in {clusters[r] for r in new_keys}:
            for record in members[cluster]:
                new_keys.setdefault(record, record)  # linked to nothing that fits: alone
    return new_keys


def _pieces(
    edges: list[tuple[str, str, float]], conflicts: set[tuple[str, str]], birth_dates: Mapping[str, str]
) -> dict[str, str]:
    """Greedy union over ``edges`` strongest first (ties by record ids), never joining two
    pieces that hold a conflicting pair: record -> smallest record id of its piece.

    A piece that edges of one same probability would join to two pieces in conflict with each
    other (a record without birth date matching two namesakes equally well) joins neither."""
    from lakecdp.identity.clustering import _UnionFind

    pieces = _UnionFind()
    dated: dict[str, list[str]] = {}

    def dated_of(piece: str) -> list[str]:
        return dated.get(piece, [piece] if piece in birth_dates else [])

    def clash(a: str, b: str) -> bool:
        return any((min(x, y), max(x, y)) in conflicts for x in dated_of(a) for y in dated_of(b))

    ordered = sorted(edges, key=lambda e: (-e[2], e[0], e[1]))
    for _, group in groupby(ordered, key=lambda e: e[2]):
        tied = [(left, right, pieces.find(left), pieces.find(right)) for left, right, _ in group]
        reach: dict[str, set[str]] = defaultdict(set)
        for _, _, a, b in tied:
            if a != b:
                reach[a].add(b)
                reach[b].add(a)
        torn = {
            piece for piece, others in reach.items() if any(clash(x, y) for x, y in combinations(sorted(others), 2))
        }
        for left, right, start_l, start_r in tied:
            a, b = pieces.find(left), pieces.find(right)
            if a == b or start_l in torn or start_r in torn or clash(a, b):
                continue
            joined = dated_of(a) + dated_of(b)
            dated.pop(a, None)
            dated.pop(b, None)
            pieces.union(a, b)
            dated[pieces.find(a)] = joined
    return {node: pieces.find(node) for node in list(pieces.parent)}


def birth_dates_of(records: pa.Table) -> dict[str, str]:
    """record -> ``yyyyMMdd`` of the records (``record_id``, ``date_of_birth`` a date) that
    have a birth date. A raw text that did not parse as a date is no birth date here: it
    vouches for nothing and conflicts with nothing."""
    ids = records.column("record_id").to_pylist()
    dates = records.column("date_of_birth").to_pylist()
    return {record: born.strftime("%Y%m%d") for record, born in zip(ids, dates) if born is not None}
