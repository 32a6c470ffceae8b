"""What the prediction blocking rules cost at scale and which true pairs they find, against the
named rules as they were before they were narrowed (e0f15f8), in one run.

World: the one ``bench.identity_embedded --world W`` builds (``W/w0``: ``silver.customer_records``
of ~1M generated records and the generator's labels; the model of ``W/models/identity``). For the
shipped rules and the earlier ones (the same list, the three named rules as they were):

1. candidate pairs per rule over all of ``w0`` (block sizes in DuckDB: ``n (n - 1) / 2`` per key,
   the product of the two sides' counts for the one-part-swapped rules) -- a per-rule sum, a pair
   two rules find counts twice;
2. blocking recall: the generator's true pairs (records of one person) found by any rule;
3. bare Splink predict (DuckDB, the model JSON with the rules swapped in) over the records of
   every ``--subset``-th household, wall and process CPU seconds, pairs above the edge floor.

    .venv/bin/python -m bench.identity_blocking --world /tmp/idscale --subset 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any

from bench.results import append_results, machine, stamp

REPO_ROOT = Path(__file__).resolve().parents[1]
#: the named rules before e0f15f8 (what the shipped ones are compared with)
EARLIER = {
    "first_name_as_last_name": "l.first_name = r.last_name",
    "last_name_as_first_name": "l.last_name = r.first_name",
    "last_name_first_initial": "l.last_name = r.last_name and substr(l.first_name, 1, 1) = substr(r.first_name, 1, 1)",
}
#: per-rule pair counts of the named rules as group sizes: (left keys, right keys)
NAMED_KEYS = {
    "shipped": {
        "swapped_names": (["first_name", "last_name"], ["last_name", "first_name"]),
        "first_name_as_last_name": (
            ["first_name", "substr(last_name, 1, 1)"],
            ["last_name", "substr(first_name, 1, 1)"],
        ),
        "last_name_as_first_name": None,  # the mirror: the same unordered pairs, counted once above
        "last_name_first_initial": None,  # not an equality: counted by a join below
    },
    "earlier": {
        "swapped_names": (["first_name", "last_name"], ["last_name", "first_name"]),
        "first_name_as_last_name": (["first_name"], ["last_name"]),
        "last_name_as_first_name": None,
        "last_name_first_initial": (["last_name", "substr(first_name, 1, 1)"], None),
    },
}
logger = logging.getLogger("bench.identity_blocking")


def rule_sql(rule: list[str], variant: str) -> str:
    from lakecdp.identity.blocking import blocking_rule_sql

    if variant == "earlier" and len(rule) == 1 and rule[0] in EARLIER:
        return EARLIER[rule[0]]
    return blocking_rule_sql(rule)


def pairs_of_rule(con: Any, rule: list[str], variant: str) -> int:
    """Candidate pairs of one rule over table ``p`` (see the module docstring)."""
    name = rule[0] if len(rule) == 1 else None
    if name in NAMED_KEYS[variant]:
        keys = NAMED_KEYS[variant][name]
        if keys is None and name == "last_name_first_initial":
            condition = rule_sql(rule, variant)
            return con.execute(
                f"select count(*) from p l join p r on l.record_id < r.record_id and ({condition})"
            ).fetchone()[0]
        if keys is None:
            return 0
        left, right = keys
        if right is None:
            return _within_blocks(con, left)
        select_l = ", ".join(f"{k} as k{i}" for i, k in enumerate(left))
        select_r = ", ".join(f"{k} as k{i}" for i, k in enumerate(right))
        on = " and ".join(f"a.k{i} = b.k{i}" for i in range(len(left)))
        total = con.execute(
            f"select coalesce(sum(a.n * b.n), 0) from (select {select_l}, count(*) n from p group by all) a "
            f"join (select {select_r}, count(*) n from p group by all) b on {on}"
        ).fetchone()[0]
        return int(total) // (2 if name == "swapped_names" else 1)
    return _within_blocks(con, rule)


def _within_blocks(con: Any, keys: list[str]) -> int:
    filled = " and ".join(f"({k}) is not null" for k in keys)
    return int(
        con.execute(
            f"select coalesce(sum(n * (n - 1) / 2), 0) from (select count(*) n from p where {filled} "
            f"group by {', '.join(keys)})"
        ).fetchone()[0]
    )


def recall(con: Any, rules: list[list[str]], variant: str) -> tuple[int, int]:
    """(true pairs, true pairs some rule finds) over table ``p`` with its ``person_id``."""
    found = " or ".join(f"coalesce(({rule_sql(r, variant)}), false)" for r in rules)
    total, covered = con.execute(
        f"select count(*), count(*) filter ({found}) from p l join p r "
        "on l.person_id = r.person_id and l.record_id < r.record_id"
    ).fetchone()
    return total, covered


def predict_seconds(prepared: Any, rules: list[list[str]], variant: str, world: Path, config: Any) -> dict[str, float]:
    """Bare Splink predict over ``prepared`` with the model JSON and ``rules`` as ``variant`` has them."""
    from splink import DuckDBAPI, Linker

    from lakecdp.identity.local import duckdb_connection

    model = json.loads(sorted((world / "models" / "identity").glob("model_v*[0-9].json"))[-1].read_text())
    model["blocking_rules_to_generate_predictions"] = [
        {"blocking_rule": rule_sql(r, variant), "sql_dialect": "duckdb"} for r in rules
    ]
    db_api = DuckDBAPI(connection=duckdb_connection(config.duckdb))
    linker = Linker(db_api.register(prepared), model)
    wall, cpu = time.perf_counter(), time.process_time()
    predictions = linker.inference.predict(threshold_match_probability=config.edge_floor, warning_mode="never")
    pairs = predictions.as_duckdbpyrelation().aggregate("count(*)").fetchall()[0][0]
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "pairs": pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="a bench.identity_embedded world")
    parser.add_argument("--subset", type=int, default=5, help="predict over every N-th household's records")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    machine_text, when = machine(), stamp()

    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    from deltalake import DeltaTable

    from lakecdp.delta_store import arrow_table
    from lakecdp.identity.blocking import populated_rules, rule_label
    from lakecdp.identity.config import load_identity_config
    from lakecdp.identity.local import LocalRecords

    config = load_identity_config(REPO_ROOT / "conf")
    records = arrow_table(DeltaTable(str(args.world / "w0" / "warehouse" / "silver" / "customer_records")))
    prepared = LocalRecords(records, config).prepared()
    labels = pcsv.read_csv(args.world / "w0" / "labels" / "entities_0.csv")
    ids = pc.binary_join_element_wise(labels["source"], labels["source_record_id"], ":")
    people = pa.table({"record_id": ids, "person_id": labels["person_id"], "household_id": labels["household_id"]})
    con = duckdb.connect()
    con.register("prepared", prepared)
    con.register("people", people)
    con.execute("create table p as select prepared.*, person_id from prepared left join people using (record_id)")
    rules = populated_rules(config, prepared)

    kept = pa.array([zlib.crc32(h.encode()) % args.subset == 0 for h in people["household_id"].to_pylist()])
    subset = prepared.filter(pc.is_in(prepared["record_id"], value_set=ids.filter(kept)))
    per_rule: dict[str, dict[str, int]] = {}
    results: dict[str, dict[str, Any]] = {}
    for variant in ("earlier", "shipped"):
        per_rule[variant] = {rule_label(r): pairs_of_rule(con, r, variant) for r in rules}
        total, covered = recall(con, rules, variant)
        results[variant] = {
            "true": total,
            "covered": covered,
            **predict_seconds(subset, rules, variant, args.world, config),
        }
        logger.info("%s: %s", variant, results[variant])

    lines = [
        "## Identity blocking at ~1M records: the named rules narrowed (issue 14)",
        "",
        f"Measured {when} on {machine_text}, load average {os.getloadavg()[0]:.1f} at the end. "
        f"World `{args.world}` w0: {prepared.num_rows:,} records; predict over every {args.subset}-th household "
        f"({subset.num_rows:,} records), bare Splink on DuckDB with the world's model, the rules swapped in. "
        f"Command: `python -m bench.identity_blocking --world {args.world} --subset {args.subset}`.",
        "",
        "| rules | true pairs found (of all) | predict wall s | predict CPU s | pairs above the edge floor |",
        "|---|---|---|---|---|",
    ]
    for variant in ("earlier", "shipped"):
        r = results[variant]
        lines.append(
            f"| {variant} | {r['covered']:,} of {r['true']:,} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['pairs']:,} |"
        )
    ratio = results["earlier"]["wall"] / results["shipped"]["wall"]
    lines += [
        "",
        f"Predict, earlier / shipped: {ratio:.1f}x wall.",
        "",
        "Pairs per rule over all of w0 (`last_name_as_first_name` is the mirror of the rule above it:",
        "their unordered pairs are counted once, on `first_name_as_last_name`).",
        "",
        "| rule | pairs (earlier) | pairs (shipped) |",
        "|---|---|---|",
    ]
    for label in per_rule["shipped"]:
        lines.append(f"| {label} | {per_rule['earlier'][label]:,} | {per_rule['shipped'][label]:,} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_record:
        append_results(text)


if __name__ == "__main__":
    main()
