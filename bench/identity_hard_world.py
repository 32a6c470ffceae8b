"""Identity accuracy on the generated worlds, DuckDB only after one Spark dump (dev harness).

Run: ``.venv/bin/python -m bench.identity_hard_world --data /tmp/idworlds [--seed 5] [--febrl WORK]``.

Step 1 (once, with Spark): generate the "hard" world (``tests/test_identity_accuracy.py::
hard_world_config``: shop without birth dates, third party without address or contact, 5 %
first-name and postcode typos, 3 % missing surnames) and the "default" world (shipped
``conf/sample.yaml``), 1,200 people each, seed 5 (``--seed``: another draw of the same
shapes, data the defaults were not tuned on), CRM + shop + third party; ingest; dump
``silver.customer_records`` and the labels to ``<data>/<world>_seed<N>_{records,labels}.parquet``.
Skipped when the files are there.

Step 2 (DuckDB, seconds): for each world, what a full identity run on the duckdb backend does
to the records: ``LocalRecords`` (prepare + deterministic edges), ``ProbabilisticMatcher.
predict_local`` (a new model trained on the records), ``final_edges``, the guarded clustering
with the record sources; scored against the labels: cluster-level pairwise P / R / F1, and
cluster P (share of clusters holding one person) / R (share of people in one cluster), as
``lakecdp identity-accuracy`` counts them. ``--febrl WORK`` also scores the silver records a
``bench.identity_benchmark --work WORK`` run left (``WORK/<set>/warehouse``), against
``--labels-root``. Prints one line per set; records nothing (bench/RESULTS.md is written by
hand from these lines).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)
SOURCES = ("crm", "shop_customers", "third_party")
WORLDS = ("hard", "default")


def world_file(data: Path, world: str, seed: int, kind: str) -> Path:
    return data / f"{world}_seed{seed}_{kind}.parquet"


def dump_worlds(data: Path, seed: int) -> None:
    """Generate, ingest and dump the worlds whose Parquet files are missing (one Spark session)."""
    import pyarrow.parquet as pq

    missing = [w for w in WORLDS if not world_file(data, w, seed, "records").is_file()]
    if not missing:
        return
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from conftest import make_project
    from test_identity_accuracy import hard_world_config

    from lakecdp.context import JobContext
    from lakecdp.identity.accuracy import load_labels
    from lakecdp.ingest.job import ingest
    from lakecdp.sample.config import load_sample_config
    from lakecdp.sample.generator import generate
    from lakecdp.spark import get_session

    data.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="identity-worlds-") as scratch:
        root = Path(scratch)
        spark = get_session(make_project(root / "session"), app_name="bench-identity-hard-world")
        try:
            for world in missing:
                project = make_project(root / world)
                labels = project.root / "labels"
                config = hard_world_config() if world == "hard" else load_sample_config(REPO_ROOT / "conf")
                generate(
                    spark,
                    landing=project.landing,
                    labels=labels,
                    people=1200,
                    seed=seed,
                    as_of=AS_OF,
                    config=config,
                    only=SOURCES,
                )
                ctx = JobContext.create(project, spark, as_of=AS_OF, run_id=f"{world}-0")
                ingest(ctx, only=SOURCES)
                records = ctx.tables.read(spark, "silver.customer_records")
                pq.write_table(records.toArrow(), world_file(data, world, seed, "records"))
                pq.write_table(load_labels(spark, labels).toArrow(), world_file(data, world, seed, "labels"))
        finally:
            spark.stop()


def febrl_set(work: Path, labels_root: Path, name: str):
    """(records, labels) of a FEBRL set a ``bench.identity_benchmark`` run ingested."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    from deltalake import DeltaTable

    records = DeltaTable(str(work / name / "warehouse" / "silver" / "customer_records")).to_pyarrow_table()
    raw = pcsv.read_csv(
        labels_root / name / "labels.csv", convert_options=pcsv.ConvertOptions(strings_can_be_null=False)
    )
    ids = [f"{s}:{r}" for s, r in zip(raw["source"].to_pylist(), raw["source_record_id"].to_pylist())]
    return records, pa.table({"record_id": ids, "person_id": [str(p) for p in raw["true_entity_id"].to_pylist()]})


def clusters_of(records, model_dir: Path) -> dict[str, str]:
    """record_id -> cluster key, as a full identity run on the duckdb backend makes them."""
    from lakecdp.identity.clustering import _cluster_in_memory
    from lakecdp.identity.config import load_identity_config
    from lakecdp.identity.conflicts import birth_dates_of
    from lakecdp.identity.local import LocalRecords, final_edges, kept_edge_rows
    from lakecdp.identity.matching import ProbabilisticMatcher

    config = load_identity_config(REPO_ROOT / "conf")
    local = LocalRecords(records, config)
    prepared = local.prepared()
    probabilistic = ProbabilisticMatcher(config, spark=None, model_dir=model_dir).predict_local(prepared)
    nodes = records.select(["record_id", "source"])
    edges = final_edges(
        local.con,
        deterministic=local.deterministic_edges(run_id="bench"),
        probabilistic=probabilistic,
        sources=nodes,
        unique=[],
        previous=None,
    )
    kept = kept_edge_rows(local.con, edges, nodes, config.edge_floor)
    ids = nodes["record_id"].to_pylist()
    sources = dict(zip(ids, nodes["source"].to_pylist()))
    rows = _cluster_in_memory(ids, kept, config, sources, birth_dates_of(records))
    return {row[0]: row[1] for row in rows}


def scores(clusters: dict[str, str], labels) -> dict[str, float]:
    """Cluster-level pairwise P / R / F1 and cluster P / R over the labelled records."""
    person = dict(zip(labels["record_id"].to_pylist(), labels["person_id"].to_pylist()))
    by_cluster, by_person, by_both = Counter(), Counter(), Counter()
    people_in, clusters_of_person = defaultdict(set), defaultdict(set)
    for record, cluster in clusters.items():
        if record not in person:
            continue
        p = person[record]
        by_cluster[cluster] += 1
        by_person[p] += 1
        by_both[(cluster, p)] += 1
        people_in[cluster].add(p)
        clusters_of_person[p].add(cluster)

    def pairs(counts: Counter) -> int:
        return sum(n * (n - 1) // 2 for n in counts.values())

    predicted, true, correct = pairs(by_cluster), pairs(by_person), pairs(by_both)
    precision, recall = correct / predicted, correct / true
    return {
        "pair P": precision,
        "pair R": recall,
        "pair F1": 2 * precision * recall / (precision + recall),
        "cluster P": sum(len(v) == 1 for v in people_in.values()) / len(people_in),
        "cluster R": sum(len(v) == 1 for v in clusters_of_person.values()) / len(clusters_of_person),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="where the world dumps are (made when missing)")
    parser.add_argument("--seed", type=int, default=5, help="the generator's seed (5: the test's world)")
    parser.add_argument("--febrl", type=Path, help="a bench.identity_benchmark --work folder to score too")
    parser.add_argument("--labels-root", type=Path, default=Path("/work/shared/benchmarks/identity"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import pyarrow.parquet as pq

    dump_worlds(args.data, args.seed)
    sets = {
        w: tuple(pq.read_table(world_file(args.data, w, args.seed, kind)) for kind in ("records", "labels"))
        for w in WORLDS
    }
    if args.febrl:
        for name in ("febrl1", "febrl2"):
            if (args.febrl / name).is_dir():
                sets[name] = febrl_set(args.febrl, args.labels_root, name)
    with tempfile.TemporaryDirectory(prefix="identity-models-") as models:
        for name, (records, labels) in sets.items():
            started = time.perf_counter()
            figures = scores(clusters_of(records, Path(models) / name), labels)
            shown = "  ".join(f"{k} {v:.4f}" for k, v in figures.items())
            print(
                f"{name:8} {records.num_rows:>6,} records  {shown}  ({time.perf_counter() - started:.1f} s)", flush=True
            )  # noqa: T201
            shutil.rmtree(Path(models) / name, ignore_errors=True)


if __name__ == "__main__":
    main()
