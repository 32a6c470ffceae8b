"""Template context per customer, from the profile, features, current segments and products.

``customer_rows`` is a DataFrame -> DataFrame transformation (no IO); ``template_context``
turns one collected row into the plain dict a template sees:

``customer_id, first_name, last_name, email, city, country, lifecycle_stage, total_spent,
cart_value, cart_products, segments`` (ids), ``segment_names``, ``customer_segment`` (the
first of the customer's segments in ``segment_priority`` order, as its display name),
``segment_keys`` (segment id -> member keys, e.g. product ids), ``recommended_products``
(only those at or above ``recommendation_min_confidence``; prints as a list of names),
``variant`` and ``in_holdout`` for the campaign. Fields without data are left out, so the
template engine can report them missing or use their fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from lakecdp.personalization.config import PersonalizationConfig
from lakecdp.personalization.variants import HOLDOUT, assign_variant

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

PROFILE_COLUMNS = ("customer_id", "first_name", "last_name", "email", "city", "country")
FEATURE_COLUMNS = ("lifecycle_stage", "total_spent", "cart_value", "cart_product_ids", "recommendations")


class ProductList(list):
    """Recommended products; ``{{ recommended_products }}`` prints their names."""

    def __str__(self) -> str:
        return ", ".join(str(p.get("name") or p.get("product_id")) for p in self)


def customer_rows(
    profile: DataFrame,
    *,
    features: DataFrame | None,
    membership: DataFrame | None,
    products: DataFrame | None,
) -> DataFrame:
    """One row per profile with features, current segments and product names attached."""
    rows = profile.select(*PROFILE_COLUMNS)
    if features is not None:
        rows = rows.join(features.select("customer_id", *FEATURE_COLUMNS), "customer_id", "left")
    else:
        rows = rows.select(
            "*",
            *[F.lit(None).alias(c) for c in FEATURE_COLUMNS[:-1]],
            F.lit(None).cast("array<struct<product_id:string,confidence:double>>").alias("recommendations"),
        )
    if membership is not None:
        current = (
            membership.where(F.col("is_current"))
            .groupBy("customer_id", "segment_id")
            .agg(
                F.array_sort(F.collect_set(F.when(F.col("member_key") != "", F.col("member_key")))).alias("member_keys")
            )
            .groupBy("customer_id")
            .agg(F.map_from_entries(F.collect_list(F.struct("segment_id", "member_keys"))).alias("segment_keys"))
        )
        rows = rows.join(current, "customer_id", "left")
    else:
        rows = rows.withColumn("segment_keys", F.lit(None).cast("map<string,array<string>>"))
    if products is not None:
        names = products.select("product_id", "name")
        recommended = (
            rows.select("customer_id", F.posexplode("recommendations").alias("rank", "rec"))
            .select("customer_id", "rank", "rec.product_id", "rec.confidence")
            .join(names, "product_id", "left")
            .groupBy("customer_id")
            .agg(
                F.array_sort(F.collect_list(F.struct("rank", "product_id", "name", "confidence"))).alias(
                    "named_recommendations"
                )
            )
        )
        rows = rows.join(recommended, "customer_id", "left")
    else:
        rows = rows.withColumn(
            "named_recommendations",
            F.transform(
                "recommendations",
                lambda r: F.struct(
                    F.lit(0).alias("rank"),
                    r["product_id"].alias("product_id"),
                    F.lit(None).cast("string").alias("name"),
                    r["confidence"].alias("confidence"),
                ),
            ),
        )
    return rows.drop("recommendations")


def customer_rows_sql(*, features: bool, membership: bool, products: bool) -> str:
    """:func:`customer_rows` as DuckDB SQL over the tables ``profile`` (the chosen customers) and,
    when present, ``features``, ``membership`` (current rows) and ``products``.

    The rows hold what Spark's ``Row.asDict(recursive=True)`` holds after :func:`customer_rows`
    (:func:`embedded_row` turns ``segment_keys`` into the dict Spark's map becomes):
    ``member_keys`` the sorted distinct non-empty keys, ``named_recommendations`` the
    recommendations in their stored order with their position as ``rank`` (0 for all without
    ``products``, as Spark's ``transform``). ``segment_keys`` are in segment id order (Spark's map
    keeps the order of a shuffle; :func:`template_context` reads the map's keys sorted).
    """
    profile = ", ".join(f"p.{c}" for c in PROFILE_COLUMNS)
    if features:
        wanted = ", ".join(f"f.{c}" for c in FEATURE_COLUMNS)
        rows = f"SELECT {profile}, {wanted} FROM profile p LEFT JOIN features f ON p.customer_id = f.customer_id"
    else:
        rows = (
            f"SELECT {profile}, NULL::VARCHAR AS lifecycle_stage, NULL::DOUBLE AS total_spent,"
            " NULL::DOUBLE AS cart_value, NULL::VARCHAR[] AS cart_product_ids,"
            " NULL::STRUCT(product_id VARCHAR, confidence DOUBLE)[] AS recommendations FROM profile p"
        )
    parts = [f"customer_rows AS ({rows})"]
    if membership:
        parts.append(
            "member_keys AS (SELECT customer_id, segment_id, list_sort(list_distinct("
            "list(CASE WHEN member_key <> '' THEN member_key END))) AS member_keys"
            " FROM membership WHERE is_current GROUP BY customer_id, segment_id)"
        )
        parts.append(
            "segment_keys AS (SELECT customer_id, list(struct_pack(segment_id := segment_id,"
            " member_keys := member_keys) ORDER BY segment_id) AS segment_keys FROM member_keys GROUP BY customer_id)"
        )
        keys, keys_join = "k.segment_keys", "LEFT JOIN segment_keys k ON r.customer_id = k.customer_id"
    else:
        keys, keys_join = "NULL AS segment_keys", ""
    if products:
        # Spark's posexplode: the position in the stored list, one row per element (a null one too)
        parts.append(
            "ranked AS (SELECT customer_id, unnest(range(len(recommendations))) AS rank,"
            " unnest(recommendations) AS rec FROM customer_rows)"
        )
        parts.append(
            "named AS (SELECT r.customer_id, list(struct_pack(rank := r.rank, product_id := r.rec.product_id,"
            " name := n.name, confidence := r.rec.confidence) ORDER BY r.rank, n.name NULLS FIRST)"
            " AS named_recommendations FROM ranked r"
            " LEFT JOIN (SELECT product_id, name FROM products) n ON r.rec.product_id = n.product_id"
            " GROUP BY r.customer_id)"
        )
        named, named_join = "n.named_recommendations", "LEFT JOIN named n ON r.customer_id = n.customer_id"
    else:
        named = (
            "list_transform(r.recommendations, lambda e: struct_pack(rank := 0, product_id := e.product_id,"
            " name := NULL::VARCHAR, confidence := e.confidence)) AS named_recommendations"
        )
        named_join = ""
    return (
        f"WITH {', '.join(parts)} SELECT r.* EXCLUDE (recommendations), {keys}, {named}"
        f" FROM customer_rows r {keys_join} {named_join} ORDER BY r.customer_id NULLS FIRST"
    )


def embedded_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row of :func:`customer_rows_sql` (from Arrow) as Spark's ``Row.asDict(recursive=True)``
    gives the row of :func:`customer_rows`: ``segment_keys`` a dict (a map), not a list of entries."""
    entries = row.get("segment_keys")
    if entries is not None:
        row = {**row, "segment_keys": {e["segment_id"]: e["member_keys"] for e in entries}}
    return row


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def template_context(
    row: Mapping[str, Any], config: PersonalizationConfig, *, campaign_id: str | None = None
) -> dict[str, Any]:
    """The dict a template sees for one customer row (see the module doc)."""
    context: dict[str, Any] = {
        k: row.get(k) for k in (*PROFILE_COLUMNS, "lifecycle_stage", "total_spent", "cart_value")
    }
    context["cart_products"] = row.get("cart_product_ids")
    segment_keys = dict(row.get("segment_keys") or {})
    segments = sorted(segment_keys)
    priority = [s for s in config.segment_priority if s in segment_keys] + [
        s for s in segments if s not in config.segment_priority
    ]
    context["segments"] = segments
    context["segment_names"] = [config.segment_names.get(s, s) for s in segments]
    context["segment_keys"] = {k: list(v or []) for k, v in segment_keys.items()}
    if priority:
        context["customer_segment"] = config.segment_names.get(priority[0], priority[0])
    recommendations = sorted(
        (
            r
            for r in (row.get("named_recommendations") or [])
            if r["confidence"] is not None and r["confidence"] >= config.recommendation_min_confidence
        ),
        key=lambda r: (r["rank"], -r["confidence"]),
    )[: config.max_recommendations]
    context["recommended_products"] = ProductList(
        {
            k: v
            for k, v in (("product_id", r["product_id"]), ("name", r["name"]), ("confidence", r["confidence"]))
            if v is not None
        }
        for r in recommendations
    )
    if campaign_id is not None and campaign_id in config.campaigns:
        variant = assign_variant(str(row["customer_id"]), campaign_id, config.campaigns[campaign_id])
        context["campaign"] = campaign_id
        context["variant"] = variant
        context["in_holdout"] = variant == HOLDOUT
    plain = {k: _plain(v) for k, v in context.items() if v is not None}
    if "recommended_products" in context:
        plain["recommended_products"] = ProductList(plain["recommended_products"])
    return plain
