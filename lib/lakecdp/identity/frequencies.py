"""Term frequencies: which exact levels are weighted by how rare the value is, and the full
name's own frequency from the first- and last-name shares saved with a model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from lakecdp.identity.config import ComparisonSpec, IdentityConfig

if TYPE_CHECKING:
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
    frequency: dict[str, float] = {}
    for full_name, first_name, last_name in full_names:
        value = _either_order(first_name, last_name, shares)
        frequency[full_name] = max(frequency.get(full_name, 0.0), value)
    return {"full_name": list(frequency), "tf_full_name": list(frequency.values())}


def _either_order(first_name: str, last_name: str, shares: dict[str, Any]) -> float:
    """How often a stranger bears the name in either order: a record with the name swapped
    ("scholz catherine") is as common as "catherine scholz", not as rare as a first name
    "scholz" makes it, and the swapped levels weigh by the larger of the two records'
    frequencies."""
    first, last = shares["first"], shares["last"]
    first_floor, last_floor = shares["first_floor"], shares["last_floor"]
    as_written = first.get(first_name, first_floor) * last.get(last_name, last_floor)
    swapped = first.get(last_name, first_floor) * last.get(first_name, last_floor)
    return float(max(as_written, swapped))


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
            table = pa.table(name_frequencies(names.itertuples(index=False), shares))
        lookup = linker.table_management.register_table(table, "lakecdp_name_frequencies", overwrite=True)
        linker.table_management.register_term_frequency_lookup(lookup, "full_name")
