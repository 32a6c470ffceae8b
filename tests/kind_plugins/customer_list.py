"""Segment kind ``customer_list``: a hand-picked list of customers (beta testers, staff).

    customer_list: {customer_ids: [c1, c3]}

Only customers in the profile are members (a listed id nobody knows matches nothing).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from lakecdp.config import StrictModel
from lakecdp.segments.kinds import SegmentKind, reason_json

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from lakecdp.segments.definitions import SegmentDefinition


class CustomerList(StrictModel, SegmentKind):
    key: ClassVar[str] = "customer_list"
    # reads the customers view (profile + features), which evaluation registers for it
    reads_views: ClassVar[bool] = True

    customer_ids: list[str] = Field(min_length=1)

    def rule(self) -> str:
        return f"listed: {','.join(self.customer_ids)}"

    def spark_matches(
        self, spark: SparkSession, definition: SegmentDefinition, *, events: DataFrame, as_of: datetime
    ) -> DataFrame:
        from pyspark.sql import functions as F

        listed = spark.table("customers").where(F.col("customer_id").isin(self.customer_ids))
        return listed.select(
            "customer_id",
            F.lit("").alias("member_key"),
            reason_json(self.rule(), F.struct(F.lit(True).alias("listed"))).alias("reason"),
        )
