"""Identity matching at scale: both backends, plus bare Splink predict + cluster as a baseline.

Generates ``--people`` people with the sample generator (the customer-record sources only:
CRM, shop accounts, third-party file — about 1.7 records per person), ingests them to
``silver.customer_records`` (skipped when the warehouse already has them; the ingest rate is
reported), trains one model (DuckDB) and times, per backend, predict + deterministic edges +
guarded clustering, scored against the generator's labels; then times plain Splink (DuckDB,
same model JSON) predict + ``cluster_pairwise_predictions_at_threshold`` with no Spark round
trips as the baseline. Appends a table to bench/RESULTS.md.

    .venv/bin/python -m bench.identity_scale --people 60000 --root /tmp/bench100k
    .venv/bin/python -m bench.identity_scale --people 600000 --root /tmp/bench1m --backends duckdb
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from bench.results import append_results, machine, stamp
from lakecdp.config import Environment, Project, SparkSettings, StorageSettings
from lakecdp.context import JobContext
from lakecdp.identity.accuracy import evaluate, load_labels
from lakecdp.identity.clustering import cluster_edges
from lakecdp.identity.config import load_identity_config
from lakecdp.identity.deterministic import deterministic_edges
from lakecdp.identity.matching import ProbabilisticMatcher
from lakecdp.identity.prepare import prepare_for_matching
from lakecdp.spark import get_session
from lakecdp.tables import Tables

REPO_ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench.identity")


def bench_project(root: Path, shuffle_partitions: int) -> Project:
    environment = Environment(
        version=1,
        name="bench",
        spark=SparkSettings(
            conf={"spark.sql.shuffle.partitions": str(shuffle_partitions), "spark.driver.memory": "6g"}
        ),
        storage=StorageSettings(warehouse=str(root / "warehouse")),
        landing=str(root / "landing"),
        checkpoints=str(root / "checkpoints"),
        as_of="2026-11-01T00:00:00Z",
    )
    return Project(root=root, conf_dir=REPO_ROOT / "conf", environment=environment)


#: the sources that become silver.customer_records (web logins left out: they come with ~17
#: behavioural events per person, which this benchmark does not need)
CUSTOMER_SOURCES = ("crm", "shop_customers", "third_party")


def ensure_records(project: Project, spark, people: int) -> str:
    """Generate and ingest the customer sources unless done; returns a note with the timings."""
    tables = Tables(project)
    if tables.exists(spark, "silver.customer_records"):
        return "records from an earlier run of this benchmark"
    from lakecdp.ingest.job import ingest
    from lakecdp.sample.config import load_sample_config
    from lakecdp.sample.generator import generate

    started = time.monotonic()
    generate(
        spark,
        landing=project.landing,
        labels=project.root / "labels",
        people=people,
        seed=42,
        increment=0,
        as_of=project.as_of(),
        config=load_sample_config(project.conf_dir),
        only=CUSTOMER_SOURCES,
    )
    generate_s = time.monotonic() - started
    started = time.monotonic()
    counts = ingest(JobContext.create(project, spark), only=CUSTOMER_SOURCES)
    ingest_s = time.monotonic() - started
    note = (
        f"generate {generate_s:.0f} s; ingest of {counts['rows_read']:,} source rows "
        f"({counts['rows_loaded']:,} loaded, {counts['rows_quarantined']:,} quarantined) {ingest_s:.0f} s = "
        f"{counts['rows_read'] / ingest_s:,.0f} rows/s"
    )
    logger.info("%s", note)
    return note


def bare_splink(config, model_path: Path, records) -> float:
    """Plain Splink on DuckDB: predict + connected components, data already in Arrow."""
    from splink import DuckDBAPI, Linker
    from splink.clustering import cluster_pairwise_predictions_at_threshold

    table = prepare_for_matching(records, config).toArrow()
    started = time.monotonic()
    db_api = DuckDBAPI()
    linker = Linker(db_api.register(table), str(model_path))
    predictions = linker.inference.predict(threshold_match_probability=config.edge_floor)
    cluster_pairwise_predictions_at_threshold(
        db_api.register(table.select(["record_id"])),
        predictions,
        db_api=db_api,
        node_id_column_name="record_id",
    ).as_duckdbpyrelation().aggregate("count(*)").fetchall()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--backends", nargs="+", default=["duckdb", "spark"])
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    machine_text, when = machine(), stamp()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)

    project = bench_project(args.root.resolve(), args.shuffle_partitions)
    spark = get_session(project, app_name="bench-identity")
    ingest_note = ensure_records(project, spark, args.people)
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
        clusters = cluster_edges(records.select("record_id", "source"), edges, config).cache()
        clusters.count()
        cluster_s = time.monotonic() - started
        report = evaluate(clusters, labels)
        rows.append(
            f"| {args.people:,} | {n_records:,} | {backend} | {train_s:.1f} | {predict_s:.1f} | "
            f"{cluster_s:.1f} | {n_edges:,} | {report.cluster_precision:.4f} | {report.cluster_recall:.4f} | "
            f"{report.pairwise_precision:.4f} | {report.pairwise_recall:.4f} |"
        )
        edges.unpersist()
        print(rows[-1], flush=True)  # noqa: T201 - a long run shows each backend as it finishes
    baseline = bare_splink(base, model_path, records)
    rows.append(
        f"| {args.people:,} | {n_records:,} | bare Splink DuckDB (predict + cluster) | - | "
        f"{baseline:.1f} (total) | - | - | - | - | - | - |"
    )
    table = "\n".join(
        [
            "| people | records | backend | train s | predict + det. edges s | cluster s | edges "
            "| cluster P | cluster R | pair P | pair R |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)  # noqa: T201
    if not args.no_record:
        append_results(
            f"## Identity at {n_records:,} records ({args.people:,} people)\n\n"
            f"Measured {when} on {machine_text}; Spark local[2], `conf/identity.yaml` defaults, no tuning; "
            f"sources {', '.join(CUSTOMER_SOURCES)}; {ingest_note}. "
            f"Command: `python -m bench.identity_scale --people {args.people} --backends {' '.join(args.backends)}`. "
            f"The lakecdp rows add deterministic edges, the over-merge guards and Spark I/O to what the "
            f"bare-Splink baseline does (same model JSON, same records).\n\n{table}"
        )


if __name__ == "__main__":
    main()
