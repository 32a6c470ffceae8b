"""Clusters of records (one per person) from deterministic and probabilistic edges, with guards.

Connected components are solved by Splink's ``cluster_pairwise_predictions_at_threshold``
on the configured backend (DuckDB: the graph goes through Arrow; Spark: stays in Spark).

Guards, because one bad link merges two customers and everything downstream:

- **weak link**: an edge is *strong* when it is deterministic or its probability is at
  least ``clustering.weak_link_probability``. Records joined by strong edges form strong
  parts; a cluster whose strong parts hang together only through a single weak edge (a
  bridge between two parts) has a weak link. Policy ``flag`` keeps the cluster and flags
  it ``weak_link``; ``split`` cuts the cluster at its weak links (flag ``split_weak_link``).
- **size**: a cluster above ``clustering.max_cluster_size`` is flagged ``oversized``;
  with ``split`` it is broken into its strong parts (flag ``oversized_split``).

- **birth dates** (:mod:`lakecdp.identity.conflicts`, when the records come with
  ``date_of_birth``): two records whose birth dates disagree beyond a typo stay in one
  cluster only when a strong edge links them directly; a cluster that holds them only
  through others (a shop record without birth date matching two namesakes of one
  household) is rebuilt strongest edge first without joining them (flag
  ``birth_date_conflict``).

Then **exclusive probable links** (``clustering.exclusive_link_probability``): an edge
below the match threshold but at least that probable joins two of those clusters when
each has no edge (at or above that probability) to any cluster but the other, and no
source has records in both (flag ``exclusive_link``). A shop record without birth date
and a partner record without address that share only a name are one person when nobody
else of that name is around; a namesake, a household member or a second record of a
source already in the cluster makes it ambiguous, and it stays apart.

Example:
    >>> clusters = cluster_edges(records.select("record_id", "source"), edges, config)
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from lakecdp.identity.config import IdentityConfig
from lakecdp.identity.conflicts import birth_dates_of, split_birth_date_conflicts
from lakecdp.columns import require_columns

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

CLUSTER_SCHEMA = "record_id string, cluster_key string, cluster_size int, link_confidence double, flags array<string>"


def connected_components(
    nodes: DataFrame, edges: DataFrame, backend: str, *, break_lineage: str | None = None
) -> DataFrame:
    """``record_id, component`` (the smallest record id of its component) for every node.

    Args:
        nodes: a ``record_id`` column.
        edges: ``record_id_l, record_id_r``: every edge given is followed.
        backend: ``duckdb`` or ``spark``.
    """
    from splink.clustering import cluster_pairwise_predictions_at_threshold

    spark = nodes.sparkSession
    node_frame = nodes.select("record_id").distinct()
    edge_frame = edges.select("record_id_l", "record_id_r")
    if backend == "duckdb":
        from splink import DuckDBAPI

        result = cluster_pairwise_predictions_at_threshold(
            node_frame.toArrow(),
            edge_frame.toArrow(),
            db_api=DuckDBAPI(),
            node_id_column_name="record_id",
        )
        frame = result.as_duckdbpyrelation().select("record_id", "cluster_id").df()
        schema = "record_id string, component string"
        return spark.createDataFrame(frame if len(frame) else [], schema)
    from splink import SparkAPI

    result = cluster_pairwise_predictions_at_threshold(
        node_frame,
        edge_frame,
        # Splink's SparkAPI.__init__ carries no annotations
        db_api=SparkAPI(spark_session=spark, break_lineage_method=break_lineage),  # type: ignore[no-untyped-call]
        node_id_column_name="record_id",
    )
    clusters: DataFrame = result.as_spark_dataframe()
    return clusters.select(F.col("record_id").cast("string"), F.col("cluster_id").cast("string").alias("component"))


def _bridges(adjacency: dict[str, dict[str, int]]) -> set[frozenset[str]]:
    """Bridges of an undirected multigraph given as node -> neighbour -> edge count."""
    bridges: set[frozenset[str]] = set()
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    counter = 0
    for root in sorted(adjacency):
        if root in order:
            continue
        order[root] = low[root] = counter
        counter += 1
        # iterative DFS: (node, parent, iterator over neighbours)
        stack: list[tuple[str, str | None, Iterator[str]]] = [(root, None, iter(sorted(adjacency[root])))]
        while stack:
            node, parent, neighbours = stack[-1]
            advanced = False
            for neighbour in neighbours:
                if neighbour == parent:
                    continue
                if neighbour in order:
                    low[node] = min(low[node], order[neighbour])
                    continue
                order[neighbour] = low[neighbour] = counter
                counter += 1
                stack.append((neighbour, node, iter(sorted(adjacency[neighbour]))))
                advanced = True
                break
            if advanced:
                continue
            stack.pop()
            if parent is not None:
                low[parent] = min(low[parent], low[node])
                if low[node] > order[parent] and adjacency[parent][node] == 1:
                    bridges.add(frozenset((parent, node)))
    return bridges


def _side_sizes(graph: dict[str, dict[str, int]], bridge: frozenset[str], part_sizes: dict[str, int]) -> int:
    """Records on the smaller side of ``bridge`` once it is removed from the part graph."""
    left, right = tuple(bridge)
    seen, stack = {left}, [left]
    while stack:
        node = stack.pop()
        for neighbour in graph[node]:
            if neighbour not in seen and frozenset((node, neighbour)) != bridge:
                seen.add(neighbour)
                stack.append(neighbour)
    left_size = sum(part_sizes.get(n, 1) for n in seen)
    right_size = sum(part_sizes.get(n, 1) for n in graph) - left_size
    return min(left_size, right_size)


def _split_at_weak_bridges(
    links: list[tuple[str, str, str]],
    part_sizes: dict[str, int],
) -> tuple[set[str], dict[str, str]]:
    """From weak edges between strong parts (cluster, part_l, part_r): the clusters with a
    weak bridge, and for them part -> new cluster key (smallest part key of each piece).

    Only a bridge between two groups (a strong part of two or more records on each side) is a
    weak link that can merge two customers; a single record hanging on its one probable match
    is the ordinary two-record match, not a bridge between people."""
    by_cluster: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for cluster, left, right in links:
        graph = by_cluster[cluster]
        graph[left][right] += 1
        graph[right][left] += 1
    weak_clusters: set[str] = set()
    new_keys: dict[str, str] = {}
    for cluster, graph in by_cluster.items():
        bridges = {
            bridge
            for bridge in _bridges({k: dict(v) for k, v in graph.items()})
            if _side_sizes(graph, bridge, part_sizes) >= 2
        }
        if not bridges:
            continue
        weak_clusters.add(cluster)
        # union-find over the super-graph without its weak bridges
        parent = {node: node for node in graph}

        def find(node: str) -> str:
            while parent[node] != node:
                parent[node] = parent[parent[node]]
                node = parent[node]
            return node

        for left, neighbours in graph.items():
            for right in neighbours:
                if frozenset((left, right)) in bridges:
                    continue
                a, b = find(left), find(right)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        for node in graph:
            new_keys[node] = find(node)
    return weak_clusters, new_keys


def exclusive_merges(
    links: list[tuple[str, str, float]],
    sources: dict[str, set[str]],
    sizes: dict[str, int],
    *,
    threshold: float,
    max_size: int,
) -> dict[str, str]:
    """Pairs of clusters an exclusive probable link joins: cluster -> new key (the smaller
    of the two keys) for each cluster that merges.

    Args:
        links: ``(cluster_l, cluster_r, p)`` for every edge at or above the exclusive-link
            probability between two different clusters (edges at or above ``threshold``
            too: a weak link cut by the guard makes its clusters each other's candidate,
            never joins them).
        sources: cluster -> sources of its records; sizes: cluster -> records.

    Two clusters join when the best edge between them is below ``threshold``, each has
    no other neighbour, their sources are disjoint and together they fit ``max_size``.
    Each joined pair is isolated (neither has another neighbour), so the result does not
    depend on the order of ``links``.
    """
    best: dict[tuple[str, str], float] = {}
    neighbours: dict[str, set[str]] = defaultdict(set)
    for left, right, p in links:
        if left == right:
            continue
        key = (min(left, right), max(left, right))
        best[key] = max(best.get(key, 0.0), p)
        neighbours[left].add(right)
        neighbours[right].add(left)
    merged: dict[str, str] = {}
    for (left, right), p in best.items():
        if p >= threshold or len(neighbours[left]) != 1 or len(neighbours[right]) != 1:
            continue
        if sources.get(left, set()) & sources.get(right, set()):
            continue
        if sizes.get(left, 1) + sizes.get(right, 1) > max_size:
            continue
        merged[left] = merged[right] = left  # left is the smaller key
    return merged


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, node: str) -> str:
        parent = self.parent
        parent.setdefault(node, node)
        root = node
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:
            parent[node], node = root, parent[node]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # the smaller id is the root: a component's key is its smallest record id
            self.parent[max(ra, rb)] = min(ra, rb)


def _birth_date_guard(
    key: dict[str, str],
    kept: list[tuple[str, str, float]],
    birth_dates: dict[str, str] | None,
    strong: float,
) -> set[str]:
    """:func:`lakecdp.identity.conflicts.split_birth_date_conflicts` applied to ``key`` in
    place: the records of the clusters it split."""
    if not birth_dates:
        return set()
    new_keys = split_birth_date_conflicts(key, kept, birth_dates, strong=strong)
    key.update(new_keys)
    return set(new_keys)


def _cluster_in_memory(
    node_ids: list[str],
    kept: list[tuple[str, str, float]],
    config: IdentityConfig,
    sources: dict[str, str] | None = None,
    birth_dates: dict[str, str] | None = None,
) -> list[tuple[str, str, int, float, list[str]]]:
    """The same algorithm as the Spark path, on the driver (DuckDB backend: one machine).

    ``kept``: edges at or above :attr:`IdentityConfig.edge_floor`; ``sources``: record ->
    source (without it no exclusive probable link is made); ``birth_dates``: record ->
    ``yyyyMMdd`` (:mod:`lakecdp.identity.conflicts`; without it no birth-date guard)."""
    guards = config.clustering
    threshold = config.model.match_threshold
    probable = kept
    kept = [edge for edge in kept if edge[2] >= threshold]
    full, parts = _UnionFind(), _UnionFind()
    for node in node_ids:
        full.find(node)
        parts.find(node)
    for left, right, p in kept:
        full.union(left, right)
        if p >= guards.weak_link_probability:
            parts.union(left, right)
    cluster = {n: full.find(n) for n in node_ids}
    part = {n: parts.find(n) for n in node_ids}
    links = [(cluster[left], part[left], part[right]) for left, right, _ in kept if part[left] != part[right]]
    weak_clusters, new_keys = _split_at_weak_bridges(links, Counter(part.values()))
    split = guards.weak_link_policy == "split"
    key = {n: (new_keys[part[n]] if split and cluster[n] in weak_clusters else cluster[n]) for n in node_ids}
    sizes: dict[str, int] = defaultdict(int)
    for n in node_ids:
        sizes[key[n]] += 1
    oversized = {n for n in node_ids if sizes[key[n]] > guards.max_cluster_size}
    if split and oversized:
        for n in oversized:
            key[n] = part[n]
        sizes = defaultdict(int)
        for n in node_ids:
            sizes[key[n]] += 1
    conflicted = _birth_date_guard(key, kept, birth_dates, guards.weak_link_probability)
    if conflicted:
        sizes = defaultdict(int)
        for n in node_ids:
            sizes[key[n]] += 1
    exclusive: dict[str, str] = {}
    before = key
    if sources is not None and guards.exclusive_link_probability is not None:
        cluster_sources: dict[str, set[str]] = defaultdict(set)
        for n in node_ids:
            cluster_sources[key[n]].add(sources[n])
        probable_links = [(key[left], key[right], p) for left, right, p in probable if key[left] != key[right]]
        exclusive = exclusive_merges(
            probable_links, cluster_sources, sizes, threshold=threshold, max_size=guards.max_cluster_size
        )
        if exclusive:
            key = {n: exclusive.get(key[n], key[n]) for n in node_ids}
            sizes = defaultdict(int)
            for n in node_ids:
                sizes[key[n]] += 1
    best: dict[str, float] = {}
    for left, right, p in probable:
        if key[left] == key[right] and (p >= threshold or before[left] != before[right]):
            best[left] = max(best.get(left, 0.0), p)
            best[right] = max(best.get(right, 0.0), p)
    weak_flag = "split_weak_link" if split else "weak_link"
    rows = []
    for n in sorted(node_ids):
        flags = set()
        if before[n] in exclusive:
            flags.add("exclusive_link")
        if n in conflicted:
            flags.add("birth_date_conflict")
        if cluster[n] in weak_clusters:
            flags.add(weak_flag)
        if n in oversized:
            flags.add("oversized_split" if split else "oversized")
        if sizes[key[n]] > guards.max_cluster_size:
            flags.add("oversized")
        rows.append((n, key[n], sizes[key[n]], float(best.get(n, 1.0)), sorted(flags)))
    return rows


def _components(size: int, left: Any, right: Any) -> Any:
    """Connected components of nodes ``0..size-1`` joined by the edges ``left[i]-right[i]``
    (numpy index arrays): per node, the smallest node index of its component.

    Min-label propagation with pointer jumping: a label is always a node of the same
    component no greater than the node, so once every edge joins equal labels each
    component holds one label, its smallest node (whose label can never drop)."""
    import numpy as np

    label = np.arange(size, dtype=np.int64)
    while True:
        low = np.minimum(label[left], label[right])
        hooked = label.copy()
        np.minimum.at(hooked, left, low)
        np.minimum.at(hooked, right, low)
        while True:  # pointer jumping: follow labels to their own labels
            jumped = hooked[hooked]
            if np.array_equal(jumped, hooked):
                break
            hooked = jumped
        if np.array_equal(hooked, label):
            return label
        label = hooked


def _birth_date_guard_arrow(
    key: Any, names: pa.Array, kept: tuple[Any, Any, Any], birth_dates: pa.Table, strong: float
) -> Any:
    """:func:`_birth_date_guard` on the arrays of :func:`cluster_arrow`: only the clusters
    holding two different birth dates go through Python. Returns (new key, conflicted mask)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    size = len(names)
    conflicted = np.zeros(size, dtype=bool)
    position = pc.index_in(birth_dates.column("record_id"), value_set=names)
    dated = pc.and_(pc.is_valid(position), pc.is_valid(birth_dates.column("date_of_birth")))
    where = np.asarray(position.filter(dated).to_numpy(), dtype=np.int64)
    days = np.asarray(birth_dates.column("date_of_birth").filter(dated).cast(pa.int32()).to_numpy(), dtype=np.int64)
    if not len(where):
        return key, conflicted
    born = np.full(size, np.iinfo(np.int64).min, dtype=np.int64)
    born[where] = days
    distinct = np.unique(np.stack([key[where], days], axis=1), axis=0)
    suspect = np.bincount(distinct[:, 0], minlength=size) >= 2
    members = suspect[key]
    if not members.any():
        return key, conflicted
    left, right, p = kept
    inside = members[left] & members[right]
    index = np.nonzero(members)[0].tolist()
    text = names.take(pa.array(index)).to_pylist()
    name_of = dict(zip(index, text, strict=True))
    epoch = date(1970, 1, 1).toordinal()
    new_keys = split_birth_date_conflicts(
        {name_of[i]: name_of[int(key[i])] for i in index},
        zip(
            [name_of[i] for i in left[inside].tolist()],
            [name_of[i] for i in right[inside].tolist()],
            p[inside].tolist(),
            strict=True,
        ),
        {
            name_of[i]: date.fromordinal(epoch + int(born[i])).strftime("%Y%m%d")
            for i in index
            if born[i] != np.iinfo(np.int64).min
        },
        strong=strong,
    )
    if not new_keys:
        return key, conflicted
    index_of = {name: i for i, name in name_of.items()}
    key = key.copy()
    for record, new in new_keys.items():
        key[index_of[record]] = index_of[new]
        conflicted[index_of[record]] = True
    return key, conflicted


def cluster_arrow(
    nodes: pa.Table, kept: pa.Table, config: IdentityConfig, birth_dates: pa.Table | None = None
) -> pa.Table:
    """:func:`_cluster_in_memory` + :func:`cluster_table` (with sources) over Arrow, the
    work done with numpy arrays: the same rows, sorted by ``record_id``.

    Args:
        nodes: ``record_id, source`` of the records to cluster (distinct ids).
        kept: ``record_id_l, record_id_r, p``: edges at or above :attr:`IdentityConfig.edge_floor`
            between two of ``nodes``, at most one per pair, never a loop
            (:func:`lakecdp.identity.local.kept_edges_local`).
        birth_dates: ``record_id, date_of_birth`` (a date) for the birth-date guard
            (:mod:`lakecdp.identity.conflicts`); None: no guard.

    Record ids are replaced by their rank in sorted order, so the smallest index of a
    component is its smallest record id, the key :class:`_UnionFind` gives it. The guards
    (weak bridges, exclusive probable links) run in Python over the few clusters and edges
    they concern, with the same functions as :func:`_cluster_in_memory`.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    guards = config.clustering
    threshold = config.model.match_threshold
    split = guards.weak_link_policy == "split"
    nodes = nodes.sort_by([("record_id", "ascending")])
    names = nodes.column("record_id").combine_chunks()
    sources = nodes.column("source").combine_chunks()
    size = len(names)
    ends = [pc.index_in(kept.column(c), value_set=names) for c in ("record_id_l", "record_id_r")]
    if any(end.null_count for end in ends):
        raise ValueError("a kept edge ends in a record that is not among the nodes")
    left, right = (np.asarray(end.to_numpy(), dtype=np.int64) for end in ends)
    p = np.asarray(kept.column("p").to_numpy(), dtype=np.float64)
    strong_enough = p >= threshold
    cluster = _components(size, left[strong_enough], right[strong_enough])
    strong = strong_enough & (p >= guards.weak_link_probability)
    part = _components(size, left[strong], right[strong])

    def name(index: int) -> str:
        return str(names[index].as_py())

    # weak bridges: kept edges between two strong parts, per cluster (few: Python)
    between = strong_enough & (part[left] != part[right])
    cluster_l, part_l, part_r = (
        cluster[left[between]].tolist(),
        part[left[between]].tolist(),
        part[right[between]].tolist(),
    )
    links = [(name(c), name(a), name(b)) for c, a, b in zip(cluster_l, part_l, part_r, strict=True)]
    part_counts = np.bincount(part, minlength=size)
    weak_clusters, new_keys = _split_at_weak_bridges(links, {name(i): int(part_counts[i]) for i in {*part_l, *part_r}})
    index_of = {name(i): i for i in {*cluster_l, *part_l, *part_r}}
    weak = np.zeros(size, dtype=bool)
    weak[[index_of[c] for c in weak_clusters]] = True
    in_weak = weak[cluster]
    key = cluster.copy()
    if split and new_keys:
        new_key_of_part = np.arange(size, dtype=np.int64)
        for old, new in new_keys.items():
            new_key_of_part[index_of[old]] = index_of[new]
        key = np.where(in_weak, new_key_of_part[part], cluster)
    sizes = np.bincount(key, minlength=size)
    oversized = sizes[key] > guards.max_cluster_size
    if split and oversized.any():
        key = np.where(oversized, part, key)
        sizes = np.bincount(key, minlength=size)
    conflicted = np.zeros(size, dtype=bool)
    if birth_dates is not None:
        kept_strong = (left[strong_enough], right[strong_enough], p[strong_enough])
        key, conflicted = _birth_date_guard_arrow(key, names, kept_strong, birth_dates, guards.weak_link_probability)
        sizes = np.bincount(key, minlength=size)
    before = key
    merged_from = np.zeros(size, dtype=bool)
    if guards.exclusive_link_probability is not None:
        apart = key[left] != key[right]
        key_l, key_r = key[left[apart]], key[right[apart]]
        touched = np.unique(np.concatenate([key_l, key_r]))
        member = np.isin(key, touched)
        cluster_sources: dict[str, set[str]] = defaultdict(set)
        for k, source in zip(key[member].tolist(), sources.filter(pa.array(member)).to_pylist(), strict=True):
            cluster_sources[name(k)].add(source)
        exclusive = exclusive_merges(
            [(name(a), name(b), q) for a, b, q in zip(key_l.tolist(), key_r.tolist(), p[apart].tolist(), strict=True)],
            cluster_sources,
            {name(k): int(sizes[k]) for k in touched.tolist()},
            threshold=threshold,
            max_size=guards.max_cluster_size,
        )
        if exclusive:
            index_of.update({name(k): int(k) for k in touched.tolist()})
            merged_key = np.arange(size, dtype=np.int64)
            for old, new in exclusive.items():
                merged_key[index_of[old]] = index_of[new]
                merged_from[index_of[old]] = True
            key = merged_key[key]
            sizes = np.bincount(key, minlength=size)
    within = (key[left] == key[right]) & (strong_enough | (before[left] != before[right]))
    best = np.zeros(size, dtype=np.float64)
    linked = np.zeros(size, dtype=bool)
    for end in (left[within], right[within]):
        np.maximum.at(best, end, p[within])
        linked[end] = True
    confidence = np.where(linked, best, 1.0)
    final_oversized = sizes[key] > guards.max_cluster_size
    # one column per flag, in sorted flag order: a row's flags are its true columns
    flag_names = [
        "birth_date_conflict",
        "exclusive_link",
        "oversized",
        "oversized_split",
        "split_weak_link",
        "weak_link",
    ]
    flag_matrix = np.stack(
        [
            conflicted,
            merged_from[before],
            (oversized & (not split)) | final_oversized,
            oversized & split,
            in_weak & split,
            in_weak & (not split),
        ],
        axis=1,
    )
    _, columns = np.nonzero(flag_matrix)
    offsets = np.concatenate([[0], np.cumsum(flag_matrix.sum(axis=1))]).astype(np.int32)
    flags = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array([flag_names[c] for c in columns.tolist()], pa.string())
    )
    return pa.table(
        {
            "record_id": names,
            "cluster_key": names.take(pa.array(key)),
            "cluster_size": pa.array(sizes[key].astype(np.int32), pa.int32()),
            "link_confidence": pa.array(confidence, pa.float64()),
            "flags": flags,
            "source": sources,
        }
    )


def cluster_table(
    rows: list[tuple[str, str, int, float, list[str]]],
    *,
    sources: dict[str, str] | None = None,
) -> pa.Table:
    """:data:`CLUSTER_SCHEMA` rows as an Arrow table; with ``sources`` (record_id ->
    source) a ``source`` column as well."""
    import pyarrow as pa

    columns: list[Sequence[Any]] = list(zip(*rows)) if rows else [[] for _ in range(5)]
    data = {
        "record_id": pa.array(columns[0], pa.string()),
        "cluster_key": pa.array(columns[1], pa.string()),
        "cluster_size": pa.array(columns[2], pa.int32()),
        "link_confidence": pa.array(columns[3], pa.float64()),
        "flags": pa.array(columns[4], pa.list_(pa.string())),
    }
    if sources is not None:
        data["source"] = pa.array([sources[r] for r in columns[0]], pa.string())
    return pa.table(data)


def _frame_from_rows(spark: SparkSession, rows: list[tuple[str, str, int, float, list[str]]]) -> DataFrame:
    """A DataFrame of :data:`CLUSTER_SCHEMA` rows, handed to the JVM as Arrow (a list of
    Python rows would be unpickled by Python workers each time Spark reads it)."""
    return spark.createDataFrame(cluster_table(rows), CLUSTER_SCHEMA)


def kept_edges(edges: DataFrame, threshold: float) -> DataFrame:
    """``record_id_l, record_id_r, p``: the edges clustering follows (deterministic = 1.0)."""
    is_deterministic = F.col("edge_type") == "deterministic"
    probability = F.when(is_deterministic, F.lit(1.0)).otherwise(F.col("match_probability"))
    return (
        edges.select("record_id_l", "record_id_r", probability.alias("p"))
        .where((F.col("p") >= threshold) & (F.col("record_id_l") != F.col("record_id_r")))
        .groupBy("record_id_l", "record_id_r")
        .agg(F.max("p").alias("p"))
    )


def cluster_edges(record_ids: DataFrame, edges: DataFrame, config: IdentityConfig) -> DataFrame:
    """Cluster records over edges at or above the match threshold, with guards.

    Args:
        record_ids: every record to cluster (column ``record_id``, ``source`` for
            exclusive probable links, ``date_of_birth`` for the birth-date guard of
            :mod:`lakecdp.identity.conflicts`); records without edges become clusters of one.
        edges: ``identity.edges`` rows (deterministic and probabilistic).
        config: ``model.match_threshold``, ``clustering`` guards and ``backend``.

    Returns:
        ``record_id, cluster_key`` (smallest record id of the final cluster),
        ``cluster_size``, ``link_confidence`` (the highest probability among the
        record's edges inside its cluster; 1.0 for a deterministic link or a cluster of
        one) and ``flags`` (``weak_link``, ``split_weak_link``, ``oversized``,
        ``oversized_split``, ``birth_date_conflict``, ``exclusive_link``; empty when clean).

    Example:
        >>> clusters = cluster_edges(records.select("record_id", "source"), edges, config)
    """
    require_columns(record_ids, ["record_id"], what="record ids")
    require_columns(edges, ["record_id_l", "record_id_r", "edge_type", "match_probability"], what="edges")
    spark = record_ids.sparkSession
    guards = config.clustering
    threshold = config.model.match_threshold
    nodes = record_ids.select("record_id").distinct()
    with_sources = "source" in record_ids.columns
    with_dates = "date_of_birth" in record_ids.columns
    if config.backend == "duckdb":
        # one machine: two Arrow transfers, the graph work in memory, one DataFrame back
        node_table = record_ids.select("record_id", *(["source"] if with_sources else [])).distinct().toArrow()
        node_ids = node_table.column("record_id").to_pylist()
        sources = dict(zip(node_ids, node_table.column("source").to_pylist())) if with_sources else None
        birth_dates = birth_dates_of(record_ids.select("record_id", "date_of_birth").toArrow()) if with_dates else None
        kept_table = kept_edges(edges, config.edge_floor).toArrow().to_pylist()
        kept_rows = [(r["record_id_l"], r["record_id_r"], r["p"]) for r in kept_table]
        known = set(node_ids)
        # an edge to a record not being clustered is ignored, as in the Spark path
        kept_rows = [r for r in kept_rows if r[0] in known and r[1] in known]
        rows = _cluster_in_memory(node_ids, kept_rows, config, sources, birth_dates)
        return _frame_from_rows(spark, rows)

    kept = kept_edges(edges, threshold).cache()
    strong = kept.where(F.col("p") >= guards.weak_link_probability)

    full = connected_components(
        nodes, kept, config.backend, break_lineage=config.spark_break_lineage
    ).withColumnRenamed("component", "cluster")
    parts = connected_components(
        nodes, strong, config.backend, break_lineage=config.spark_break_lineage
    ).withColumnRenamed("component", "part")
    membership = full.join(parts, "record_id").cache()

    # weak edges between different strong parts: the only places a cluster can be cut
    left = membership.select(F.col("record_id").alias("record_id_l"), "cluster", F.col("part").alias("part_l"))
    right = membership.select(F.col("record_id").alias("record_id_r"), F.col("part").alias("part_r"))
    cross = (
        kept.join(left, "record_id_l")
        .join(right, "record_id_r")
        .where(F.col("part_l") != F.col("part_r"))
        .select("cluster", "part_l", "part_r")
    )
    links = [(r["cluster"], r["part_l"], r["part_r"]) for r in cross.collect()]
    linked_parts = sorted({p for _, left_part, right_part in links for p in (left_part, right_part)})
    part_sizes = (
        {
            r["part"]: r["count"]
            for r in membership.where(F.col("part").isin(linked_parts)).groupBy("part").count().collect()
        }
        if linked_parts
        else {}
    )
    weak_clusters, new_keys = _split_at_weak_bridges(links, part_sizes)
    if weak_clusters:
        logger.info("%d cluster(s) hang on a weak link (policy %s)", len(weak_clusters), guards.weak_link_policy)

    weak_flag = "split_weak_link" if guards.weak_link_policy == "split" else "weak_link"
    weak_frame = spark.createDataFrame([(c,) for c in sorted(weak_clusters)] or [], "cluster string")
    assigned = membership.join(weak_frame.withColumn("weak", F.lit(True)), "cluster", "left").withColumn(
        "weak", F.coalesce("weak", F.lit(False))
    )
    if guards.weak_link_policy == "split" and new_keys:
        key_frame = spark.createDataFrame(sorted(new_keys.items()), "part string, split_key string")
        assigned = (
            assigned.join(key_frame, "part", "left")
            .withColumn("key", F.when(F.col("weak"), F.col("split_key")).otherwise(F.col("cluster")))
            .drop("split_key")
        )
    else:
        assigned = assigned.withColumn("key", F.col("cluster"))

    size_window = Window.partitionBy("key")
    assigned = assigned.withColumn("size", F.count("*").over(size_window))
    oversized = F.col("size") > guards.max_cluster_size
    if guards.weak_link_policy == "split":
        assigned = (
            assigned.withColumn("oversized", oversized)
            .withColumn("key", F.when(F.col("oversized"), F.col("part")).otherwise(F.col("key")))
            .withColumn("size", F.count("*").over(size_window))
        )
        size_flags = (
            F.when(F.col("size") > guards.max_cluster_size, F.array(F.lit("oversized_split"), F.lit("oversized")))
            .when(F.col("oversized"), F.array(F.lit("oversized_split")))
            .otherwise(F.array())
        )
    else:
        size_flags = F.when(oversized, F.array(F.lit("oversized"))).otherwise(F.array())
    weak_flags = F.when(F.col("weak"), F.array(F.lit(weak_flag))).otherwise(F.array())
    assigned = assigned.select(
        "record_id",
        F.col("key").alias("cluster_key"),
        F.col("size").cast("int").alias("cluster_size"),
        F.array_sort(F.array_distinct(F.concat(weak_flags, size_flags))).alias("flags"),
    )

    if with_dates:
        assigned = _birth_date_guard_spark(assigned, record_ids, kept, guards.weak_link_probability)
    assigned = assigned.withColumn("before_key", F.col("cluster_key"))
    if with_sources and guards.exclusive_link_probability is not None:
        assigned = _join_exclusive(assigned, record_ids.select("record_id", "source"), edges, config)

    # confidence: the best edge joining the record to a member of its final cluster
    keys_l = assigned.select(
        F.col("record_id").alias("record_id_l"), F.col("cluster_key").alias("key_l"), F.col("before_key").alias("b_l")
    )
    keys_r = assigned.select(
        F.col("record_id").alias("record_id_r"), F.col("cluster_key").alias("key_r"), F.col("before_key").alias("b_r")
    )
    # edges at or above the threshold, and the exclusive links between the clusters they join
    inside = (
        kept_edges(edges, config.edge_floor)
        .join(keys_l, "record_id_l")
        .join(keys_r, "record_id_r")
        .where((F.col("key_l") == F.col("key_r")) & ((F.col("p") >= threshold) | (F.col("b_l") != F.col("b_r"))))
    )
    ends = (
        inside.select(F.col("record_id_l").alias("record_id"), "p")
        .unionByName(inside.select(F.col("record_id_r").alias("record_id"), "p"))
        .groupBy("record_id")
        .agg(F.max("p").alias("best"))
    )
    return assigned.join(ends, "record_id", "left").select(
        "record_id",
        "cluster_key",
        "cluster_size",
        F.coalesce(F.col("best"), F.lit(1.0)).cast("double").alias("link_confidence"),
        "flags",
    )


def _birth_date_guard_spark(assigned: DataFrame, record_ids: DataFrame, kept: DataFrame, strong: float) -> DataFrame:
    """:func:`lakecdp.identity.conflicts.split_birth_date_conflicts` on the Spark path: the
    clusters holding two birth dates and their edges go to the driver (few), the new keys
    come back as a join."""
    dated = record_ids.where(F.col("date_of_birth").isNotNull()).select(
        "record_id", F.date_format("date_of_birth", "yyyyMMdd").alias("dob")
    )
    with_dob = assigned.select("record_id", "cluster_key").join(dated, "record_id", "left")
    candidates = with_dob.groupBy("cluster_key").agg(F.countDistinct("dob").alias("dates")).where("dates > 1")
    members = with_dob.join(candidates.select("cluster_key"), "cluster_key", "left_semi").collect()
    if not members:
        return assigned
    clusters = {r["record_id"]: r["cluster_key"] for r in members}
    ids = assigned.sparkSession.createDataFrame([(i,) for i in sorted(clusters)], "record_id string")
    edges = [
        (r["record_id_l"], r["record_id_r"], r["p"])
        for r in kept.join(ids.withColumnRenamed("record_id", "record_id_l"), "record_id_l", "left_semi")
        .join(ids.withColumnRenamed("record_id", "record_id_r"), "record_id_r", "left_semi")
        .collect()
    ]
    birth_dates = {r["record_id"]: r["dob"] for r in members if r["dob"] is not None}
    new_keys = split_birth_date_conflicts(clusters, edges, birth_dates, strong=strong)
    if not new_keys:
        return assigned
    key_frame = assigned.sparkSession.createDataFrame(sorted(new_keys.items()), "record_id string, conflict_key string")
    is_split = F.col("conflict_key").isNotNull()
    flagged = F.array_sort(F.array_union("flags", F.array(F.lit("birth_date_conflict"))))
    return (
        assigned.join(key_frame, "record_id", "left")
        .withColumn("flags", F.when(is_split, flagged).otherwise(F.col("flags")))
        .withColumn("cluster_key", F.coalesce("conflict_key", "cluster_key"))
        .withColumn("cluster_size", F.count("*").over(Window.partitionBy("cluster_key")).cast("int"))
        .drop("conflict_key")
    )


def _join_exclusive(assigned: DataFrame, sources: DataFrame, edges: DataFrame, config: IdentityConfig) -> DataFrame:
    """:func:`exclusive_merges` on the Spark path: the candidate links and the sources of
    the clusters they touch go to the driver (few), the new keys come back as a join."""
    guards = config.clustering
    keys_l = assigned.select(F.col("record_id").alias("record_id_l"), F.col("cluster_key").alias("key_l"))
    keys_r = assigned.select(F.col("record_id").alias("record_id_r"), F.col("cluster_key").alias("key_r"))
    links = [
        (r["key_l"], r["key_r"], r["p"])
        for r in kept_edges(edges, config.edge_floor)
        .join(keys_l, "record_id_l")
        .join(keys_r, "record_id_r")
        .where(F.col("key_l") != F.col("key_r"))
        .select("key_l", "key_r", "p")
        .collect()
    ]
    if not links:
        return assigned
    touched = sorted({k for left, right, _ in links for k in (left, right)})
    per_cluster = (
        assigned.where(F.col("cluster_key").isin(touched))
        .join(sources, "record_id")
        .groupBy("cluster_key")
        .agg(F.collect_set("source").alias("sources"), F.count("*").alias("size"))
        .collect()
    )
    merged = exclusive_merges(
        links,
        {r["cluster_key"]: set(r["sources"]) for r in per_cluster},
        {r["cluster_key"]: r["size"] for r in per_cluster},
        threshold=config.model.match_threshold,
        max_size=guards.max_cluster_size,
    )
    if not merged:
        return assigned
    spark = assigned.sparkSession
    new_keys = spark.createDataFrame(sorted(merged.items()), "cluster_key string, merged_key string")
    joined = assigned.join(new_keys, "cluster_key", "left")
    is_merged = F.col("merged_key").isNotNull()
    return (
        joined.withColumn("cluster_key", F.coalesce("merged_key", "cluster_key"))
        .withColumn("cluster_size", F.count("*").over(Window.partitionBy("cluster_key")).cast("int"))
        .withColumn(
            "flags",
            F.when(is_merged, F.array_sort(F.array_union("flags", F.array(F.lit("exclusive_link"))))).otherwise(
                F.col("flags")
            ),
        )
        .drop("merged_key")
    )


def affected_records(
    changed: DataFrame,
    edges: DataFrame,
    previous_edges: DataFrame,
    previous_id_map: DataFrame,
    threshold: float,
    *,
    max_rounds: int = 50,
) -> DataFrame:
    """``record_id`` of every record whose cluster, id or flags can differ from the last run.

    Clustering, guards and link confidences of a connected component depend on its own
    edges only. A component of the new graph that holds no changed record and no end of an
    edge that appeared, vanished or changed probability is, edge for edge, a component of
    the previous graph: its clusters, ids and golden record stay what they were. The rest
    is found by closure from those seeds: whole previous customers (so every previous id is
    held inside the set or wholly outside it), then their neighbours over the new edges,
    until no edge leaves the set. The result is a union of new components and of previous
    customers, so re-clustering only it equals re-clustering everything.

    Args:
        changed: ``record_id`` of records inserted, updated or deleted since the last run.
        edges: this run's edges; ``previous_edges``: the last run's ``identity.edges``.
        previous_id_map: the last run's ``identity.id_map`` (``record_id, customer_id``).
        threshold: the match threshold (edges below it are not followed).
        max_rounds: closure rounds before giving up (a chain that long is a bug).
    """
    new = kept_edges(edges, threshold)
    old = kept_edges(previous_edges, threshold)
    moved = new.subtract(old).unionByName(old.subtract(new))
    seeds = (
        changed.select("record_id")
        .unionByName(moved.select(F.col("record_id_l").alias("record_id")))
        .unionByName(moved.select(F.col("record_id_r").alias("record_id")))
        .distinct()
    )
    owners = previous_id_map.select("record_id", "customer_id")
    pairs = new.select("record_id_l", "record_id_r").cache()
    scope = seeds.localCheckpoint()
    for _ in range(max_rounds):
        customers = owners.join(scope, "record_id", "left_semi").select("customer_id").distinct()
        scope = scope.unionByName(owners.join(customers, "customer_id", "left_semi").select("record_id")).distinct()
        inside = scope.withColumn("_in", F.lit(True))
        ends = pairs.join(
            inside.withColumnRenamed("record_id", "record_id_l").withColumnRenamed("_in", "_in_l"),
            "record_id_l",
            "left",
        ).join(
            inside.withColumnRenamed("record_id", "record_id_r").withColumnRenamed("_in", "_in_r"),
            "record_id_r",
            "left",
        )
        reached = (
            ends.where(F.col("_in_l").isNull() != F.col("_in_r").isNull())
            .select(
                F.when(F.col("_in_l").isNull(), F.col("record_id_l")).otherwise(F.col("record_id_r")).alias("record_id")
            )
            .distinct()
            .localCheckpoint()
        )
        if reached.isEmpty():
            pairs.unpersist()
            return scope.localCheckpoint()
        scope = scope.unionByName(reached).distinct().localCheckpoint()
    pairs.unpersist()
    raise RuntimeError(f"affected records still growing after {max_rounds} rounds")
