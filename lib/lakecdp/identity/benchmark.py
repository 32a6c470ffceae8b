"""Score identity resolution on a labelled set, next to bare Splink on the same records.

A *labelled set* is a folder in the shape a source owner hands over: one CSV per source in
the owner's own column names, plus ``labels.csv`` (``source, source_record_id,
true_entity_id``; ``source`` is the CSV's file name without ``.csv``). Each CSV is mapped in
by an ordinary source YAML (``conf/benchmarks/<family>/<source>.yaml``, see docs/sources.md)
and goes through the real pipeline:

1. a throw-away project (its own warehouse, landing folder and models) whose ``conf`` holds
   the project's ``identity.yaml`` as shipped and the set's source YAMLs;
2. ``ingest`` then a full ``identity`` run (the model is trained on these records);
3. cluster-level pairwise precision / recall / F1 of ``identity.id_map`` against the labels
   (:func:`lakecdp.identity.accuracy.evaluate`), and *blocking recall*: the share of true
   pairs that at least one configured blocking rule makes a candidate pair;
4. bare Splink 5 on DuckDB with textbook settings on the same silver records (names, birth
   date, address and postcode with Jaro-Winkler levels; blocking on birth date, name and
   postcode; prior from exact name + birth date, u by random sampling, m by EM; threshold
   0.95; connected components), timed train + predict + cluster.

Example:
    >>> result = run_benchmark(Path("/data/febrl1"), conf_dir=Path("conf"), work=Path("/tmp/b"))
    >>> print(result.format())
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lakecdp import catalog
from lakecdp.identity.accuracy import AccuracyReport

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from lakecdp.config import Project

logger = logging.getLogger(__name__)

LABEL_FILE = "labels.csv"
LABEL_COLUMNS = ("source", "source_record_id", "true_entity_id")


class BenchmarkSetError(ValueError):
    """A labelled set or its source YAMLs cannot be used; the message names the file."""


@dataclass(frozen=True)
class BenchmarkResult:
    set_name: str
    records: int
    lakecdp: AccuracyReport
    lakecdp_seconds: float
    ingest_seconds: float
    blocking_recall: float
    true_pairs: int
    candidate_true_pairs: int
    splink: AccuracyReport
    splink_seconds: float
    # seconds per stage of the lakecdp identity run (inputs, score, edges, ...)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def speed_ratio(self) -> float:
        """lakecdp identity run time over bare Splink's train + predict + cluster time."""
        return self.lakecdp_seconds / self.splink_seconds if self.splink_seconds else float("inf")

    def format(self) -> str:
        def row(name: str, report: AccuracyReport, seconds: float) -> str:
            return (
                f"| {name} | {report.pairwise_precision:.4f} | {report.pairwise_recall:.4f} | "
                f"{report.pairwise_f1:.4f} | {report.clusters:,} | {seconds:.1f} |"
            )

        return "\n".join(
            [
                f"set {self.set_name}: {self.records:,} records; lakecdp blocking recall "
                f"{self.blocking_recall:.4f} ({self.candidate_true_pairs:,} of {self.true_pairs:,} true pairs "
                f"are candidates); ingest {self.ingest_seconds:.1f} s (not in the identity time)",
                "",
                "| method | pair P | pair R | pair F1 | clusters | seconds |",
                "|---|---|---|---|---|---|",
                row(
                    "lakecdp (ingest → identity, shipped conf/identity.yaml; identity run time)",
                    self.lakecdp,
                    self.lakecdp_seconds,
                ),
                row("bare Splink 5 DuckDB (train + predict + cluster)", self.splink, self.splink_seconds),
            ]
        )


# -- the set ------------------------------------------------------------------------------
def set_sources(set_dir: Path) -> list[str]:
    """Source names of a labelled set: its CSV files other than ``labels.csv``."""
    if not set_dir.is_dir():
        raise BenchmarkSetError(f"{set_dir}: not a folder")
    if not (set_dir / LABEL_FILE).is_file():
        raise BenchmarkSetError(f"{set_dir}: no {LABEL_FILE} (source, source_record_id, true_entity_id)")
    names = sorted(p.stem for p in set_dir.glob("*.csv") if p.name != LABEL_FILE)
    if not names:
        raise BenchmarkSetError(f"{set_dir}: no source CSV files next to {LABEL_FILE}")
    return names


def default_sources_dir(conf_dir: Path, set_dir: Path) -> Path:
    """``conf/benchmarks/<family>``: the set's name without trailing digits (febrl2 -> febrl)."""
    return conf_dir / "benchmarks" / set_dir.name.rstrip("0123456789_-")


def prepare_project(set_dir: Path, *, conf_dir: Path, sources_dir: Path, work: Path) -> Project:
    """A fresh project under ``work``: the shipped identity config, the set's sources landed."""
    from lakecdp.config import Environment, Project, SparkSettings, StorageSettings
    from lakecdp.ingest.sources import load_sources

    names = set_sources(set_dir)
    if work.exists():
        shutil.rmtree(work)
    bench_conf = work / "conf"
    (bench_conf / "sources").mkdir(parents=True)
    shutil.copy(conf_dir / "identity.yaml", bench_conf / "identity.yaml")
    for name in names:
        yaml_file = sources_dir / f"{name}.yaml"
        if not yaml_file.is_file():
            raise BenchmarkSetError(
                f"{set_dir / (name + '.csv')}: no source YAML {yaml_file} maps it (docs/sources.md)"
            )
        shutil.copy(yaml_file, bench_conf / "sources" / yaml_file.name)
    sources = load_sources(bench_conf)
    for name in names:
        # the source's own path glob decides where its file must land
        folder = Path(sources[name].path).parent
        target = work / "landing" / folder
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(set_dir / f"{name}.csv", target / f"{name}.csv")
    environment = Environment(
        version=1,
        name="benchmark",
        spark=SparkSettings(conf={"spark.sql.shuffle.partitions": "4"}),
        storage=StorageSettings(warehouse=str(work / "warehouse")),
        landing=str(work / "landing"),
        checkpoints=str(work / "checkpoints"),
        as_of="2026-11-01T00:00:00Z",
    )
    return Project(root=work, conf_dir=bench_conf, environment=environment)


def load_set_labels(spark: SparkSession, set_dir: Path) -> DataFrame:
    """``record_id, person_id`` from the set's ``labels.csv`` (record_id = ``source:id``)."""
    from pyspark.sql import functions as F

    path = set_dir / LABEL_FILE
    frame = spark.read.option("header", True).csv(str(path))
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise BenchmarkSetError(f"{path}: lacks columns {missing}; has {frame.columns}")
    return frame.select(
        F.concat_ws(":", "source", "source_record_id").alias("record_id"),
        F.col("true_entity_id").alias("person_id"),
    ).distinct()


# -- blocking recall ----------------------------------------------------------------------
def blocking_recall(prepared: DataFrame, labels: DataFrame, rules_sql: list[str]) -> tuple[int, int]:
    """``(true pairs, true pairs some rule makes a candidate)`` over ``prepared`` records.

    Each rule is SQL over ``l`` and ``r`` (as Splink's blocking rules are); evaluated in
    DuckDB on every true pair, so the count does not depend on how Splink generates pairs.
    """
    import duckdb

    records = prepared.toArrow()
    people = labels.toArrow()
    con = duckdb.connect()
    con.register("records", records)
    con.register("people", people)
    con.execute("""
        create table true_pairs as
        select a.record_id as id_l, b.record_id as id_r
        from people a join people b on a.person_id = b.person_id and a.record_id < b.record_id
        where a.record_id in (select record_id from records) and b.record_id in (select record_id from records)
    """)
    condition = " or ".join(f"coalesce(({sql}), false)" for sql in rules_sql) or "false"
    counted = con.execute(f"""
        select count(*), count(*) filter (where {condition})
        from true_pairs p join records l on l.record_id = p.id_l join records r on r.record_id = p.id_r
    """).fetchone()
    con.close()
    assert counted is not None  # an aggregate gives one row
    total, covered = counted
    return int(total), int(covered)


# -- bare Splink --------------------------------------------------------------------------
def bare_splink_clusters(records: DataFrame, threshold: float = 0.95) -> tuple[pd.DataFrame, float]:
    """Textbook Splink 5 on DuckDB over silver records; ``(pandas record_id/cluster_key, seconds)``.

    Input: first and last name, birth date (ISO text), street address, postcode, as silver
    holds them. Timed from registering the records to having clusters.
    """
    import splink.comparison_library as cl
    from pyspark.sql import functions as F
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    frame = records.select(
        F.col("record_id").alias("unique_id"),
        F.lower("first_name").alias("first_name"),
        F.lower("last_name").alias("surname"),
        F.date_format("date_of_birth", "yyyy-MM-dd").alias("dob"),
        F.lower("address_line1").alias("address"),
        F.col("postcode"),
    ).toArrow()
    started = time.perf_counter()
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.NameComparison("first_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison("dob", input_is_string=True),
            cl.JaroWinklerAtThresholds("address", [0.9, 0.7]),
            cl.JaroWinklerAtThresholds("postcode", [0.9]),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("dob"),
            block_on("first_name", "surname"),
            block_on("postcode"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    db_api = DuckDBAPI()
    linker = Linker(db_api.register(frame), settings, log_level=logging.WARNING)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("first_name", "surname", "dob")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1_000_000, seed=42)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("first_name", "surname"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    predictions = linker.inference.predict(threshold_match_probability=threshold)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, threshold)
    result = clusters.as_duckdbpyrelation().select("unique_id, cluster_id").df()
    seconds = time.perf_counter() - started
    return result.rename(columns={"unique_id": "record_id", "cluster_id": "cluster_key"}), seconds


# -- the run ------------------------------------------------------------------------------
def run_benchmark(
    set_dir: Path,
    *,
    conf_dir: Path,
    work: Path,
    sources_dir: Path | None = None,
    spark: SparkSession | None = None,
) -> BenchmarkResult:
    """Ingest + identity (shipped config) and bare Splink on one labelled set, scored.

    Args:
        set_dir: the labelled set (CSV per source + ``labels.csv``).
        conf_dir: the project's conf folder (its ``identity.yaml`` is used as is).
        work: a scratch folder (replaced): warehouse, landing copy, trained model.
        sources_dir: the set's source YAMLs (default ``<conf_dir>/benchmarks/<family>``).
        spark: a session to reuse (default: one built for the scratch project).
    """
    from lakecdp.context import JobContext
    from lakecdp.identity.accuracy import evaluate
    from lakecdp.identity.config import load_identity_config
    from lakecdp.identity.job import run_identity
    from lakecdp.identity.blocking import blocking_rules_sql
    from lakecdp.identity.prepare import prepare_for_matching
    from lakecdp.ingest.job import ingest

    set_dir, work = set_dir.resolve(), work.resolve()
    sources_dir = (sources_dir or default_sources_dir(conf_dir, set_dir)).resolve()
    project = prepare_project(set_dir, conf_dir=conf_dir, sources_dir=sources_dir, work=work)
    if spark is None:
        from lakecdp.spark import get_session

        spark = get_session(project, app_name="lakecdp-identity-benchmark")
    ctx = JobContext.create(project, spark)

    started = time.perf_counter()
    ingest(ctx)
    ingest_seconds = time.perf_counter() - started
    stage_seconds: dict[str, float] = {}
    started = time.perf_counter()
    run_identity(ctx, mode="full", timings=stage_seconds)
    lakecdp_seconds = time.perf_counter() - started

    labels = load_set_labels(spark, set_dir).cache()
    records = ctx.tables.read(spark, catalog.CUSTOMER_RECORDS.name).cache()
    n_records = records.count()
    report = evaluate(ctx.tables.read(spark, catalog.ID_MAP.name), labels)

    config = load_identity_config(project.conf_dir)
    prepared = prepare_for_matching(records, config)
    true_pairs, covered = blocking_recall(prepared, labels, blocking_rules_sql(config))

    splink_frame, splink_seconds = bare_splink_clusters(records, threshold=0.95)
    splink_report = evaluate(spark.createDataFrame(splink_frame.astype(str)), labels)
    records.unpersist()
    labels.unpersist()
    return BenchmarkResult(
        set_name=set_dir.name,
        records=n_records,
        lakecdp=report,
        lakecdp_seconds=lakecdp_seconds,
        ingest_seconds=ingest_seconds,
        blocking_recall=covered / true_pairs if true_pairs else 1.0,
        true_pairs=true_pairs,
        candidate_true_pairs=covered,
        splink=splink_report,
        splink_seconds=splink_seconds,
        stage_seconds=stage_seconds,
    )
