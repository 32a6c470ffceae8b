"""Term frequencies: which exact levels are weighted by how rare the value is, and the full
name's own frequency from the first- and last-name shares saved with a model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from lakecdp.identity.config import ComparisonSpec, IdentityConfig

if TYPE_CHECKING:
    import pyarrow as pa
    from splink import Linker
    from splink.internals.splink_dataframe import SplinkDataFrame

logger = logging.getLogger(__name__)


def tf_columns(config: IdentityConfig) -> list[str]:
    """Columns whose exact level is weighted by term frequency (Splink computes the
    frequencies itself; ``full_name`` has its own, :func:`name_frequencies`)."""
    return [spec_column for spec in config.model.comparisons for spec_column in _tf_column(spec)]


def _tf_column(spec: ComparisonSpec) -> list[str]:
    if not spec.term_frequency:
        return []
    return {"name": ["full_name"], "address": ["postcode"]}.get(spec.kind, [])


def name_shares_sql(table: str) -> str:
    """Per first name and per last name, its share of the records that have one
    (``part``, ``name``, ``share``). ``table``: a registered table name (from Splink, never
    from data). Plain SQL for DuckDB and Spark."""
    return f"""
        select 'first' as part, first_name as name,
               cast(count(*) as double) / (select count(first_name) from {table}) as share
        from {table} where first_name is not null group by first_name
        union all
        select 'last' as part, last_name as name,
               cast(count(*) as double) / (select count(last_name) from {table}) as share
        from {table} where last_name is not null group by last_name
    """


def name_shares(linker: Linker, registered: SplinkDataFrame) -> dict[str, Any]:
    """The first- and last-name shares of the records ``registered`` (a Splink table), and
    for a name never seen the share of a name seen once (``first_floor``, ``last_floor``).

    Saved with a trained model (``model_v<N>.names.json``) and used by every prediction with
    it: a pair's score then depends on the pair and the model only, so an incremental run
    (which keeps the scores of pairs it does not rescore) equals a full run."""
    # Splink's query_sql carries no annotations
    rows = linker.misc.query_sql(name_shares_sql(registered.physical_name), output_type="pandas")  # type: ignore[no-untyped-call]
    shares: dict[str, Any] = {"first": {}, "last": {}}
    for part, name, share in rows[["part", "name", "share"]].itertuples(index=False):
        shares[part][name] = float(share)
    for part in ("first", "last"):
        seen = shares[part]
        shares[f"{part}_floor"] = min(seen.values()) if seen else 1.0
    return shares


def name_frequencies(full_names: Iterable[tuple[str, str, str]], shares: dict[str, Any]) -> dict[str, list[Any]]:
    """Per full name, how often a record of ANOTHER person bears it (``tf_full_name``): the
    share of records with its first name times the share with its last name, read in either
    order, the larger (a record "scholz catherine" is as common as "catherine scholz").

    Splink's own term frequency of a value is its share of the records; on a full name that
    is mostly one person's own duplicates: a name held by one person with two records looks
    as common as a name two people share, and a rare exact name never outweighs the prior.
    First and last names are each shared by many people, so their shares measure how common
    a name is among people; their product is the chance a stranger bears the whole name if
    first and last names are chosen independently, which is what textbook Splink assumes
    with one term-frequency comparison per name. A name the shares never saw counts as seen
    once.

    Args:
        full_names: ``(full_name, first_name, last_name)`` rows.
        shares: from :func:`name_shares`.

    Example: 1,935 records, "gill" on 4 and "öztürk" on 2: 4/1935 x 2/1935 = 2.1e-6
    (a name seen on 2 records by Splink's own measure: 1.0e-3).
    """
    import pyarrow as pa

    rows = list(full_names)
    names = pa.table(
        {
            column: pa.array([row[i] for row in rows], pa.string())
            for i, column in enumerate(("full_name", "first_name", "last_name"))
        }
    )
    table = name_frequency_table(names, shares)
    return {
        "full_name": table.column("full_name").to_pylist(),
        "tf_full_name": table.column("tf_full_name").to_pylist(),
    }


def name_frequency_table(names: pa.Table, shares: dict[str, Any]) -> pa.Table:
    """:func:`name_frequencies` over an Arrow table ``full_name, first_name, last_name``
    (one row per distinct name; no null), computed column-wise: ``full_name, tf_full_name``,
    the same doubles as the per-row products in Python (IEEE multiplication and maximum)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def share(column: pa.ChunkedArray, part: str) -> pa.ChunkedArray:
        seen = shares[part]
        known = pa.array(list(seen), pa.string())
        found = pc.take(pa.array(list(seen.values()), pa.float64()), pc.index_in(column, value_set=known))
        return pc.fill_null(found, float(shares[f"{part}_floor"]))

    first, last = (names.column(c).cast(pa.string()) for c in ("first_name", "last_name"))
    # how often a stranger bears the name in either order: a record with the name swapped
    # ("scholz catherine") is as common as "catherine scholz", not as rare as a first name
    # "scholz" makes it, and the swapped levels weigh by the larger of the two records' frequencies
    as_written = pc.multiply(share(first, "first"), share(last, "last"))
    swapped = pc.multiply(share(last, "first"), share(first, "last"))
    each = pa.table(
        {"full_name": names.column("full_name").cast(pa.string()), "tf": pc.max_element_wise(as_written, swapped)}
    )
    # one full name can split two ways ("anna maria lee": "anna maria" + "lee", "anna" + "maria lee")
    grouped = each.group_by("full_name", use_threads=False).aggregate([("tf", "max")])
    return pa.table({"full_name": grouped.column("full_name"), "tf_full_name": grouped.column("tf_max")})


def register_term_frequencies(
    linker: Linker, registered: SplinkDataFrame, config: IdentityConfig, shares: dict[str, Any] | None = None
) -> None:
    """Term frequencies over all the records ``registered`` (a Splink table), before any
    prediction. The full name gets :func:`name_frequencies` from ``shares`` (those saved
    with the model); a model without them (written by hand) weighs names as trained, by an
    empty lookup: no frequency, no adjustment. Other columns get Splink's own."""
    import pyarrow as pa

    for column in tf_columns(config):
        if column != "full_name":
            linker.table_management.compute_tf_table(column)
            continue
        if shares is None:
            logger.info("the model has no saved name shares: names weigh as trained, whatever their rarity")
            table = pa.table({"full_name": pa.array([], pa.string()), "tf_full_name": pa.array([], pa.float64())})
        else:
            names = linker.misc.query_sql(  # type: ignore[no-untyped-call]
                f"select distinct full_name, first_name, last_name from {registered.physical_name} "
                "where full_name is not null",
                output_type="pandas",
            )
            table = name_frequency_table(pa.Table.from_pandas(names, preserve_index=False), shares)
        lookup = linker.table_management.register_table(table, "lakecdp_name_frequencies", overwrite=True)
        linker.table_management.register_term_frequency_lookup(lookup, "full_name")
