"""The one input-column check every stage uses: :func:`require_columns` and its
:class:`MissingColumnsError` (a ``ValueError``), so a caller catches one exception whichever stage
found the gap.

Example:
    >>> require_columns(orders, ("order_id", "customer_id"), what="orders")
    MissingColumnsError: orders is missing columns ['customer_id']; it has ['order_id', 'total']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame

if TYPE_CHECKING:
    import pyarrow as pa


class MissingColumnsError(ValueError):
    """An input lacks columns the code needs; the message names the input and the columns."""


def require_columns(df: DataFrame | pa.Table, columns: Iterable[str], *, what: str) -> None:
    """Raise :class:`MissingColumnsError` naming ``what`` when ``df`` lacks any of ``columns``.

    Args:
        columns: the names needed, reported missing in the order given.
        what: the input as the reader knows it (a table name, "customer records").

    Raises:
        TypeError: ``df`` is neither a Spark DataFrame nor an Arrow table.
        MissingColumnsError: ``what is missing columns [...]; it has [...]`` (sorted).
    """
    if isinstance(df, DataFrame):
        present = set(df.columns)
    elif isinstance(getattr(df, "column_names", None), list):  # a pyarrow Table (the embedded engine)
        present = set(df.column_names)
    else:
        raise TypeError(f"{what} must be a DataFrame or an Arrow table, got {type(df).__name__}")
    missing = list(dict.fromkeys(c for c in columns if c not in present))
    if missing:
        raise MissingColumnsError(f"{what} is missing columns {missing}; it has {sorted(present)}")
