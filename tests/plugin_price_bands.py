"""A pipeline step that lives in tests/ only: the proof that a new step is one new file (this
one: its function and its table) plus one registry line (tests/test_steps_run.py adds
``Step("price_bands", "plugin_price_bands:run", ...)`` to ``lakecdp.steps.STEPS``).

It reads silver.products and writes gold.price_bands: per category, the number of products and
the cheapest and dearest price.
"""

from __future__ import annotations

from lakecdp import catalog
from lakecdp.catalog import Table
from lakecdp.context import JobContext

PRICE_BANDS = Table(
    "gold.price_bands",
    "category string, products bigint, min_price double, max_price double, run_id string",
    ("category",),
    __name__,
    readers=(),
)


def run(ctx: JobContext) -> dict[str, int]:
    """Pipeline step ``price_bands``: gold.price_bands from silver.products."""
    from pyspark.sql import functions as F

    products = ctx.tables.read(ctx.spark, catalog.PRODUCTS.name)
    bands = (
        products.groupBy("category")
        .agg(F.count("*").alias("products"), F.min("price").alias("min_price"), F.max("price").alias("max_price"))
        .withColumn("run_id", F.lit(ctx.run_id))
    )
    ctx.tables.overwrite(bands, PRICE_BANDS.name)
    return {"categories": bands.count()}
