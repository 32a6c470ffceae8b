"""Which pairs lakecdp's probabilistic edges and bare Splink's predictions disagree on, and why.

Same prepared records and the same saved model (``model_v<N>.json``) on Splink's DuckDB API,
four ways: the settings lakecdp builds (``ProbabilisticMatcher.settings_for``, populated
blocking rules) or the model JSON as bare Splink reads it, each with the full name's term
frequencies from the name shares saved with the model (lakecdp's
``register_term_frequencies``) or Splink's own (the share of records bearing the whole
name). Pairs at or above ``edge_floor`` are compared as ordered sets; the differing ones are
printed with both sides' weights. ``--production`` also runs ``predict_local`` and
``bench.identity_embedded``'s bare Splink path and checks they give the lakecdp-settings /
shares and JSON / Splink-tf sets.

    .venv/bin/python -m bench.identity_pairs --world /tmp/idsub5 --where "lower(last_name) like 'b%'"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RECORDS = "silver/customer_records"
VARIANTS = (("lakecdp", "shares"), ("json", "splink"), ("json", "shares"), ("lakecdp", "splink"))


def main() -> None:
    import duckdb
    import pyarrow.compute as pc
    from deltalake import DeltaTable
    from splink import DuckDBAPI, Linker

    from lakecdp.identity.blocking import populated_rules
    from lakecdp.identity.config import load_identity_config
    from lakecdp.identity.frequencies import register_term_frequencies
    from lakecdp.identity.local import LocalRecords, duckdb_connection
    from lakecdp.identity.matching import ProbabilisticMatcher
    from lakecdp.identity.model_store import names_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="w0/ and models/ of bench.identity_embedded")
    parser.add_argument("--where", default=None, help="SQL filter over the silver records (a subset)")
    parser.add_argument("--low", type=float, default=0.5, help="predict threshold (weights of pairs near the floor)")
    parser.add_argument("--production", action="store_true")
    parser.add_argument("--show", type=int, default=20, help="differing pairs printed")
    args = parser.parse_args()
    config = load_identity_config(REPO_ROOT / "conf")
    records = DeltaTable(str(args.world / "w0" / "warehouse" / RECORDS)).to_pyarrow_table()
    if args.where:  # a filter typed by the person running the bench
        records = duckdb.sql(f"select * from records where {args.where}").to_arrow_table()
    prepared = LocalRecords(records, config).prepared()
    matcher = ProbabilisticMatcher(config, spark=None, model_dir=args.world / "models" / "identity")
    model = matcher.load()
    shares = json.loads(names_path(model.path).read_text())
    rules = populated_rules(config, prepared)
    print(
        f"{prepared.num_rows:,} records; blocking rules: {len(rules)} populated of {len(config.model.blocking_rules)}"
    )  # noqa: T201

    def predict(settings_from: str, tf: str):  # noqa: ANN202 - an Arrow table
        if settings_from == "lakecdp":
            settings = matcher.settings_for("duckdb", model, rules)
        else:
            settings = json.loads(model.path.read_text())
        settings["retain_intermediate_calculation_columns"] = True
        db_api = DuckDBAPI(connection=duckdb_connection(config.duckdb))
        registered = db_api.register(prepared)
        linker = Linker(registered, settings, validate_settings=False)
        if tf == "shares":
            register_term_frequencies(linker, registered, config, shares)
        started, cpu = time.perf_counter(), time.process_time()
        relation = linker.inference.predict(threshold_match_probability=args.low).as_duckdbpyrelation()
        table = relation.query(
            "p",
            """select least(record_id_l, record_id_r)::varchar l, greatest(record_id_l, record_id_r)::varchar r,
                      match_weight::double mw, match_probability::double mp, gamma_name::int g_name,
                      tf_full_name_l::double tf_l, tf_full_name_r::double tf_r, mw_tf_adj_name::double mw_tf,
                      full_name_l, full_name_r from p""",
        ).to_arrow_table()
        floor = pc.sum(pc.greater_equal(table["mp"], config.edge_floor)).as_py()
        print(  # noqa: T201
            f"settings {settings_from}, full-name tf {tf}: {floor:,} pairs >= edge_floor {config.edge_floor} "
            f"({time.perf_counter() - started:.0f} s, {time.process_time() - cpu:.0f} CPU-s)"
        )
        return table

    tables = {variant: predict(*variant) for variant in VARIANTS}

    def pairs(table) -> set[tuple[str, str]]:  # noqa: ANN001
        kept = table.filter(pc.greater_equal(table["mp"], config.edge_floor))
        return set(zip(kept["l"].to_pylist(), kept["r"].to_pylist()))

    sets = {variant: pairs(table) for variant, table in tables.items()}
    lakecdp, bare = sets[("lakecdp", "shares")], sets[("json", "splink")]
    print(
        f"lakecdp {len(lakecdp):,}, bare {len(bare):,}: lakecdp only {len(lakecdp - bare):,}, bare only {len(bare - lakecdp):,}"
    )  # noqa: T201
    print(f"bare + lakecdp's name lookup == lakecdp: {sets[('json', 'shares')] == lakecdp}")  # noqa: T201
    print(f"lakecdp + Splink's own full-name tf == bare: {sets[('lakecdp', 'splink')] == bare}")  # noqa: T201
    ours, theirs = tables[("lakecdp", "shares")], tables[("json", "splink")]  # noqa: F841 - read by DuckDB
    both = duckdb.sql(
        f"""select coalesce(o.l, t.l) l, coalesce(o.r, t.r) r, coalesce(o.full_name_l, t.full_name_l) name_l,
                  coalesce(o.full_name_r, t.full_name_r) name_r, coalesce(o.g_name, t.g_name) g_name,
                  o.mw mw_lakecdp, o.mp p_lakecdp, t.mw mw_bare, t.mp p_bare, o.mw_tf tf_adj_lakecdp, t.mw_tf tf_adj_bare,
                  (o.mw - o.mw_tf) - (t.mw - t.mw_tf) rest_differs
           from ours o full join theirs t using (l, r)
           where (coalesce(o.mp, 0) >= {config.edge_floor}) <> (coalesce(t.mp, 0) >= {config.edge_floor})"""
    )
    print(both.aggregate("g_name, count(*) pairs, max(abs(rest_differs)) max_rest_differs", "g_name").order("g_name"))  # noqa: T201
    print(both.order("p_lakecdp nulls last").limit(args.show).to_df().to_string())  # noqa: T201
    if args.production:
        edges = matcher.predict_local(prepared)
        got = set(zip(edges["record_id_l"].to_pylist(), edges["record_id_r"].to_pylist()))
        print(f"predict_local: {edges.num_rows:,} edges, == lakecdp: {got == lakecdp}")  # noqa: T201
        db_api = DuckDBAPI(connection=duckdb_connection(config.duckdb))
        linker = Linker(db_api.register(prepared), str(model.path))
        relation = linker.inference.predict(threshold_match_probability=config.edge_floor).as_duckdbpyrelation()
        plain = relation.query(
            "p",
            "select least(record_id_l, record_id_r)::varchar l, greatest(record_id_l, record_id_r)::varchar r from p",
        ).to_arrow_table()
        got = set(zip(plain["l"].to_pylist(), plain["r"].to_pylist()))
        print(f"bench.identity_embedded's bare Splink: {plain.num_rows:,} pairs, == bare: {got == bare}")  # noqa: T201


if __name__ == "__main__":
    main()
