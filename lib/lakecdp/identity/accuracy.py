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

from lakecdp.identity.deterministic import MissingColumnsError

if TYPE_CHECKING:
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
    return frame.select(
        F.concat_ws(":", "source", "source_record_id").alias("record_id"), "person_id"
    ).distinct()


def evaluate(
    id_map_or_clusters: DataFrame, labels: DataFrame, *, examples: int = 5
) -> AccuracyReport:
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
        raise MissingColumnsError(
            f"clusters need customer_id or cluster_key; have {id_map_or_clusters.columns}"
        )
    for column in ("record_id", "person_id"):
        if column not in labels.columns:
            raise MissingColumnsError(f"labels need {column}; have {labels.columns}")

    scored = (
        id_map_or_clusters.select("record_id", F.col(key).alias("cluster"))
        .join(labels.select("record_id", "person_id"), "record_id")
        .cache()
    )
    pairs = F.col("n") * (F.col("n") - 1) / 2
    by_cluster = scored.groupBy("cluster").agg(
        F.count("*").alias("n"), F.countDistinct("person_id").alias("persons"),
        F.sort_array(F.collect_list(F.concat_ws("=", "record_id", "person_id"))).alias("records"),
    )
    by_person = scored.groupBy("person_id").agg(
        F.count("*").alias("n"), F.countDistinct("cluster").alias("clusters"),
        F.sort_array(F.collect_list(F.concat_ws("@", "record_id", "cluster"))).alias("records"),
    )
    by_both = scored.groupBy("cluster", "person_id").agg(F.count("*").alias("n"))

    totals = (
        by_cluster.agg(
            F.sum("n").alias("records"), F.count("*").alias("clusters"),
            F.sum(F.when(F.col("persons") == 1, 1).otherwise(0)).alias("pure"),
            F.sum(pairs).alias("predicted_pairs"),
        )
        .crossJoin(
            by_person.agg(
                F.count("*").alias("persons"),
                F.sum(F.when(F.col("clusters") == 1, 1).otherwise(0)).alias("whole"),
                F.sum(pairs).alias("true_pairs"),
            )
        )
        .crossJoin(by_both.agg(F.sum(pairs).alias("correct_pairs")))
        .first()
    )
    merges = (
        by_cluster.where(F.col("persons") > 1)
        .orderBy(F.desc("persons"), F.desc("n"), "cluster").limit(examples).collect()
    )
    misses = (
        by_person.where(F.col("clusters") > 1)
        .orderBy(F.desc("clusters"), F.desc("n"), "person_id").limit(examples).collect()
    )
    scored.unpersist()

    records = int(totals["records"] or 0)
    predicted = int(totals["predicted_pairs"] or 0)
    true = int(totals["true_pairs"] or 0)
    correct = int(totals["correct_pairs"] or 0)
    clusters = int(totals["clusters"] or 0)
    persons = int(totals["persons"] or 0)
    pairwise_precision, pairwise_recall = _ratio(correct, predicted), _ratio(correct, true)
    cluster_precision = _ratio(int(totals["pure"] or 0), clusters)
    cluster_recall = _ratio(int(totals["whole"] or 0), persons)
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
        false_merges=[ClusterExample(r["cluster"], int(r["persons"]), list(r["records"])) for r in merges],
        misses=[ClusterExample(r["person_id"], int(r["clusters"]), list(r["records"])) for r in misses],
    )
    logger.info(
        "identity accuracy: cluster P %.4f R %.4f, pairwise P %.4f R %.4f",
        cluster_precision, cluster_recall, pairwise_precision, pairwise_recall,
    )
    return report
