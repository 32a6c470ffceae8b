"""``lakecdp identity-accuracy``, ``identity-charts`` and ``identity-benchmark``."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from lakecdp import catalog

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakecdp.config import Project
    from lakecdp.tables import Tables

logger = logging.getLogger(__name__)


def _session(args: argparse.Namespace, app: str) -> tuple[Project, SparkSession, Tables]:
    from lakecdp.context import start_job

    ctx = start_job(args.conf, args.env, app_name=app)
    return ctx.project, ctx.spark, ctx.tables


def _accuracy(args: argparse.Namespace) -> int:
    from lakecdp.identity.accuracy import evaluate, load_labels

    project, spark, tables = _session(args, "lakecdp-identity-accuracy")
    clusters = tables.read(spark, args.table)
    report = evaluate(clusters, load_labels(spark, project.path(args.labels)), examples=args.examples)
    # the figures are the command's output
    print(report.format())  # noqa: T201
    return 0


def _charts(args: argparse.Namespace) -> int:
    from lakecdp.identity.config import load_identity_config
    from lakecdp.identity.diagnostics import save_diagnostic_charts
    from lakecdp.identity.matching import ProbabilisticMatcher

    project, spark, tables = _session(args, "lakecdp-identity-charts")
    config = load_identity_config(project.conf_dir)
    matcher = ProbabilisticMatcher(config, spark=spark, model_dir=project.path(config.models_dir))
    records = tables.read(spark, catalog.CUSTOMER_RECORDS.name)
    pair = tuple(args.pair) if args.pair else None
    for path in save_diagnostic_charts(matcher, records, project.path(args.out), pair=pair):
        print(path)  # noqa: T201
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    accuracy = subparsers.add_parser(
        "identity-accuracy", help="pairwise and cluster precision/recall of the identity graph against labels"
    )
    accuracy.add_argument("--labels", required=True, help="the generator's labels folder (entities_*.csv)")
    accuracy.add_argument(
        "--table",
        default=catalog.ID_MAP.name,
        help="record_id + customer_id (or cluster_key) table (default identity.id_map)",
    )
    accuracy.add_argument("--examples", type=int, default=5, help="worst merges / misses to list")
    accuracy.set_defaults(handler=_accuracy)

    charts = subparsers.add_parser("identity-charts", help="Splink diagnostic charts of the model as HTML")
    charts.add_argument("--out", default="reports/identity", help="output folder")
    charts.add_argument("--pair", nargs=2, metavar="RECORD_ID", help="two record ids for a waterfall chart")
    charts.set_defaults(handler=_charts)

    register_benchmark(subparsers)


def _benchmark(args: argparse.Namespace) -> int:
    from lakecdp.config import load_project
    from lakecdp.identity.benchmark import run_benchmark

    project = load_project(args.conf, env=args.env)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lakecdp-benchmark-"))
    result = run_benchmark(
        Path(args.set),
        conf_dir=project.conf_dir,
        work=work,
        sources_dir=Path(args.sources) if args.sources else None,
    )
    print(result.format())  # noqa: T201 - the figures are the command's output
    return 0


def register_benchmark(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = subparsers.add_parser(
        "identity-benchmark",
        help="ingest + identity on a labelled set (CSV per source + labels.csv), scored next to bare Splink",
    )
    bench.add_argument("--set", required=True, help="folder: one CSV per source + labels.csv")
    bench.add_argument(
        "--sources",
        default=None,
        help="folder of the set's source YAMLs (default: conf/benchmarks/<set name without digits>)",
    )
    bench.add_argument("--work", default=None, help="scratch folder, replaced (default: a new temp folder)")
    bench.set_defaults(handler=_benchmark)
