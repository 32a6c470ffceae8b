"""Identity matching at scale: both backends, plus bare Splink predict + cluster as a baseline.

Generates ``--people`` people with the sample generator, ingests them to
``silver.customer_records`` (skipped when the warehouse already has them), trains one model
(DuckDB) and times, per backend, predict + deterministic edges + guarded clustering; then
times plain Splink (DuckDB, same model JSON) predict + ``cluster_pairwise_predictions_at_threshold``
with no Spark round trips. Prints a markdown table row per run for bench/RESULTS.md.

    .venv/bin/python bench/identity_scale.py --people 100000 --root /tmp/bench100k
    .venv/bin/python bench/identity_scale.py --people 1000000 --root /tmp/bench1m --backends duckdb
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from lakecdp.config import Environment, Project, SparkSettings, StorageSettings
from lakecdp.context import JobContext
from lakecdp.identity.accuracy import evaluate, load_labels
from lakecdp.identity.clustering import cluster_edges
from lakecdp.identity.config import load_identity_config
from lakecdp.identity.deterministic import deterministic_edges
from lakecdp.identity.matching import ProbabilisticMatcher, prepare_for_matching
from lakecdp.spark import get_session
from lakecdp.tables import Tables

REPO_ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench.identity")


def bench_project(root: Path, shuffle_partitions: int) -> Project:
    environment = Environment(
        version=1,
        name="bench",
        spark=SparkSettings(conf={"spark.sql.shuffle.partitions": str(shuffle_partitions),
                                  "spark.driver.memory": "6g"}),
        storage=StorageSettings(warehouse=str(root / "warehouse")),
        landing=str(root / "landing"),
        checkpoints=str(root / "checkpoints"),
        as_of="2026-11-01T00:00:00Z",
    )
    return Project(root=root, conf_dir=REPO_ROOT / "conf", environment=environment)


def ensure_records(project: Project, spark, people: int) -> None:
    tables = Tables(project)
    if tables.exists(spark, "silver.customer_records"):
        return
    from lakecdp.ingest.job import run as ingest
    from lakecdp.sample.config import load_sample_config
    from lakecdp.sample.generator import generate

    started = time.monotonic()
    generate(spark, landing=project.landing, labels=project.root / "labels", people=people, seed=42,
             increment=0, as_of=project.as_of(), config=load_sample_config(project.conf_dir))
    ingest(JobContext.create(project, spark))
    logger.info("generated and ingested %d people in %.0fs", people, time.monotonic() - started)


def bare_splink(config, model_path: Path, records) -> float:
    """Plain Splink on DuckDB: predict + connected components, data already in Arrow."""
    from splink import DuckDBAPI, Linker
    from splink.clustering import cluster_pairwise_predictions_at_threshold

    table = prepare_for_matching(records, config).toArrow()
    started = time.monotonic()
    db_api = DuckDBAPI()
    linker = Linker(db_api.register(table), str(model_path))
    predictions = linker.inference.predict(threshold_match_probability=config.model.match_threshold)
    cluster_pairwise_predictions_at_threshold(
        db_api.register(table.select(["record_id"])), predictions, db_api=db_api,
        node_id_column_name="record_id",
    ).as_duckdbpyrelation().aggregate("count(*)").fetchall()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--backends", nargs="+", default=["duckdb", "spark"])
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)

    project = bench_project(args.root.resolve(), args.shuffle_partitions)
    spark = get_session(project, app_name="bench-identity")
    ensure_records(project, spark, args.people)
    records = Tables(project).read(spark, "silver.customer_records").cache()
    n_records = records.count()
    base = load_identity_config(project.conf_dir)
    model_dir = args.root / "models"

    started = time.monotonic()
    trained = ProbabilisticMatcher(base, spark=spark, model_dir=model_dir)
    model_path = trained.train(records)
    train_s = time.monotonic() - started

    labels = load_labels(spark, args.root / "labels")
    rows = []
    for backend in args.backends:
        config = base.with_backend(backend)
        matcher = ProbabilisticMatcher(config, spark=spark, model_dir=model_dir)
        started = time.monotonic()
        det, _ = deterministic_edges(records, config)
        edges = det.unionByName(matcher.predict(records)).cache()
        n_edges = edges.count()
        predict_s = time.monotonic() - started
        started = time.monotonic()
        clusters = cluster_edges(records.select("record_id"), edges, config).cache()
        clusters.count()
        cluster_s = time.monotonic() - started
        report = evaluate(clusters, labels)
        rows.append(
            f"| {args.people:,} | {n_records:,} | {backend} | {train_s:.0f} | {predict_s:.0f} | "
            f"{cluster_s:.0f} | {n_edges:,} | {report.cluster_precision:.4f} | {report.cluster_recall:.4f} | "
            f"{report.pairwise_precision:.4f} | {report.pairwise_recall:.4f} |"
        )
        edges.unpersist()
    baseline = bare_splink(base, model_path, records)
    rows.append(f"| {args.people:,} | {n_records:,} | bare Splink DuckDB (predict + cluster) | - | "
                f"{baseline:.0f} (total) | - | - | - | - | - | - |")
    print("| people | records | backend | train s | predict + det. edges s | cluster s | edges "  # noqa: T201
          "| cluster P | cluster R | pair P | pair R |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")  # noqa: T201
    print("\n".join(rows))  # noqa: T201


if __name__ == "__main__":
    main()
