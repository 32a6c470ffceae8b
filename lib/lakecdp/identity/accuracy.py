"""How good is the identity graph? Pairwise and cluster-level precision / recall against labels.

- *pairwise*: over all record pairs; a pair is predicted when both records share a
  cluster, true when both belong to one person.
- *cluster precision*: share of predicted clusters whose records all belong to one person
  (one bad link merges two customers, so this is the figure that matters most).
- *cluster recall*: share of true persons whose records all fall in one cluster.

Only records present in both the clustering and the labels are scored.

Example:
    >>> report = evaluate(tables.read(spark, "identity.id_map"), load_labels(spark, "labels"))
    >>> print(report.format())
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp.columns import MissingColumnsError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

LABEL_COLUMNS = ("source", "source_record_id", "person_id")


@dataclass(frozen=True)
class ClusterExample:
    cluster: str
    persons: int
    records: list[str]


@dataclass(frozen=True)
class AccuracyReport:
    records: int
    persons: int
    clusters: int
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    cluster_precision: float
    cluster_recall: float
    cluster_f1: float
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int
    # predicted clusters mixing several persons, most persons first
    false_merges: list[ClusterExample] = field(default_factory=list)
    # persons split over several clusters, most clusters first (cluster = person id here)
    misses: list[ClusterExample] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        lines = [
            f"records {self.records}  persons {self.persons}  clusters {self.clusters}",
            f"pairwise   precision {self.pairwise_precision:.4f}  recall {self.pairwise_recall:.4f}"
            f"  F1 {self.pairwise_f1:.4f}  (pairs: true {self.true_pairs}, predicted "
            f"{self.predicted_pairs}, correct {self.correct_pairs})",
            f"cluster    precision {self.cluster_precision:.4f}  recall {self.cluster_recall:.4f}"
            f"  F1 {self.cluster_f1:.4f}",
        ]
        if self.false_merges:
            lines.append("worst false merges (cluster: persons, records):")
            lines += [f"  {e.cluster}: {e.persons}, {', '.join(e.records)}" for e in self.false_merges]
        if self.misses:
            lines.append("worst misses (person: clusters, records):")
            lines += [f"  {e.cluster}: {e.persons}, {', '.join(e.records)}" for e in self.misses]
        return "\n".join(lines)


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _ratio(numerator: int, denominator: int) -> float:
    return 1.0 if denominator == 0 else numerator / denominator


def load_labels(spark: SparkSession, labels_dir: str | Path) -> DataFrame:
    """``record_id, person_id`` from every ``entities_*.csv`` in the generator's labels folder."""
    folder = Path(labels_dir)
    files = sorted(folder.glob("entities_*.csv"))
    if not files:
        raise FileNotFoundError(f"{folder}: no entities_*.csv label files")
    frame = spark.read.option("header", True).csv([str(f) for f in files])
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise MissingColumnsError(f"{files[0]}: label file lacks columns {missing}")
    # labels name a source by its landing folder; ingest names the records a web login makes
    # "web" (conf/sources/web_events.yaml, also.record_source)
    record_source = F.when(F.col("source") == "web_events", F.lit("web")).otherwise(F.col("source"))
    return frame.select(F.concat_ws(":", record_source, "source_record_id").alias("record_id"), "person_id").distinct()


def evaluate(id_map_or_clusters: DataFrame, labels: DataFrame, *, examples: int = 5) -> AccuracyReport:
    """Score a clustering against true persons.

    Args:
        id_map_or_clusters: ``record_id`` plus ``customer_id`` (``identity.id_map``) or
            ``cluster_key`` (:func:`~lakecdp.identity.clustering.cluster_edges`).
        labels: ``record_id, person_id`` (see :func:`load_labels`).
        examples: how many worst false merges and misses to list.

    Returns:
        An :class:`AccuracyReport`.

    Example:
        >>> evaluate(clusters, labels).cluster_precision
        0.991
    """
    if "record_id" not in id_map_or_clusters.columns:
        raise MissingColumnsError("clusters need a record_id column")
    key = next((c for c in ("customer_id", "cluster_key") if c in id_map_or_clusters.columns), None)
    if key is None:
        raise MissingColumnsError(f"clusters need customer_id or cluster_key; have {id_map_or_clusters.columns}")
    for column in ("record_id", "person_id"):
        if column not in labels.columns:
            raise MissingColumnsError(f"labels need {column}; have {labels.columns}")

    # one Spark job: (record, cluster, person) triples are small even for millions of
    # records, and the counting below is cheaper in pandas than in several Spark stages
    scored: pd.DataFrame = (
        id_map_or_clusters.select("record_id", F.col(key).cast("string").alias("cluster"))
        .join(labels.select("record_id", F.col("person_id").cast("string")), "record_id")
        .toPandas()
    )

    def pairs(sizes: pd.Series) -> int:
        return int((sizes * (sizes - 1) // 2).sum())

    by_cluster = scored.groupby("cluster").agg(n=("record_id", "size"), persons=("person_id", "nunique"))
    by_person = scored.groupby("person_id").agg(n=("record_id", "size"), clusters=("cluster", "nunique"))
    by_both = scored.groupby(["cluster", "person_id"]).size()

    def listing(frame: pd.DataFrame, group: str, value: str, sep: str) -> dict[str, list[str]]:
        rows = frame.assign(item=frame["record_id"] + sep + frame[value])
        return {k: sorted(v) for k, v in rows.groupby(group)["item"]}

    worst_clusters = (
        by_cluster[by_cluster["persons"] > 1]
        .reset_index()
        .sort_values(["persons", "n", "cluster"], ascending=[False, False, True])
        .head(examples)
    )
    worst_persons = (
        by_person[by_person["clusters"] > 1]
        .reset_index()
        .sort_values(["clusters", "n", "person_id"], ascending=[False, False, True])
        .head(examples)
    )
    cluster_items = listing(scored[scored["cluster"].isin(worst_clusters["cluster"])], "cluster", "person_id", "=")
    person_items = listing(scored[scored["person_id"].isin(worst_persons["person_id"])], "person_id", "cluster", "@")
    merges = [(r.cluster, r.persons, cluster_items[r.cluster]) for r in worst_clusters.itertuples()]
    misses = [(r.person_id, r.clusters, person_items[r.person_id]) for r in worst_persons.itertuples()]

    records = len(scored)
    predicted = pairs(by_cluster["n"])
    true = pairs(by_person["n"])
    correct = pairs(by_both)
    clusters = len(by_cluster)
    persons = len(by_person)
    pairwise_precision, pairwise_recall = _ratio(correct, predicted), _ratio(correct, true)
    cluster_precision = _ratio(int((by_cluster["persons"] == 1).sum()), clusters)
    cluster_recall = _ratio(int((by_person["clusters"] == 1).sum()), persons)
    report = AccuracyReport(
        records=records,
        persons=persons,
        clusters=clusters,
        pairwise_precision=pairwise_precision,
        pairwise_recall=pairwise_recall,
        pairwise_f1=_f1(pairwise_precision, pairwise_recall),
        cluster_precision=cluster_precision,
        cluster_recall=cluster_recall,
        cluster_f1=_f1(cluster_precision, cluster_recall),
        true_pairs=true,
        predicted_pairs=predicted,
        correct_pairs=correct,
        false_merges=[ClusterExample(str(c), int(n), items) for c, n, items in merges],
        misses=[ClusterExample(str(p), int(n), items) for p, n, items in misses],
    )
    logger.info(
        "identity accuracy: cluster P %.4f R %.4f, pairwise P %.4f R %.4f",
        cluster_precision,
        cluster_recall,
        pairwise_precision,
        pairwise_recall,
    )
    return report
