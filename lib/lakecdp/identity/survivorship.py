"""Golden records: one ``gold.customer_profile`` row per customer, attribute by attribute.

Each attribute (or group of attributes that must stay together, like the parts of one
postal address) is taken from the one record that wins its configured rule:

- ``most_recent``: the non-null value of the most recently updated record;
- ``source_priority``: the non-null value of the first source in the priority list
  (unlisted sources come last), most recent first within a source;
- ``most_frequent``: the value most records agree on, most recent first on a tie;
- ``longest``: the longest value ("William" over "Bill"), most recent first on a tie.

Remaining ties go to the smallest ``record_id``, so the result never depends on row order.
Which record and source won is kept per attribute in ``provenance``; every known email,
phone and device id is kept as a sorted array.

Example:
    >>> profiles = golden_records(records, id_map, rules, run_id=ctx.run_id)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

from pydantic import Field, model_validator

from lakecdp import catalog
from lakecdp.config import StrictModel

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame

RuleName = Literal["most_recent", "source_priority", "most_frequent", "longest"]
Attribute = Literal[
    "first_name",
    "last_name",
    "email",
    "phone",
    "date_of_birth",
    "address_line1",
    "postcode",
    "city",
    "country",
    "email_consent",
]
ATTRIBUTES: tuple[str, ...] = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "date_of_birth",
    "address_line1",
    "postcode",
    "city",
    "country",
    "email_consent",
)
RECORD_COLUMNS = (
    "record_id",
    "source",
    *ATTRIBUTES,
    "device_ids",
    "updated_at",
)
PROFILE_SCHEMA = catalog.CUSTOMER_PROFILE.ddl
PROFILE_COLUMNS = (
    "customer_id",
    *ATTRIBUTES,
    "emails",
    "phones",
    "device_ids",
    "record_ids",
    "sources",
    "provenance",
    "first_seen_at",
    "updated_at",
    "run_id",
)
# larger than any -unix_micros(): records without updated_at count as the oldest
_NEVER = 2**62


def _default_attribute_rules() -> dict[Attribute, RuleName]:
    return {
        # the CRM is keyed by people who talk to the customer; shops often hold nicknames
        "first_name": "source_priority",
        "last_name": "source_priority",
        "email": "most_recent",
        "phone": "most_recent",
        # a typo in one source is outvoted by the others
        "date_of_birth": "most_frequent",
        "address_line1": "most_recent",
        "email_consent": "most_recent",
    }


def _default_groups() -> list[list[Attribute]]:
    return [["address_line1", "postcode", "city", "country"]]


class SurvivorshipRules(StrictModel):
    """``survivorship`` section of ``conf/identity.yaml``."""

    # rule for attributes not listed under ``attributes``
    default_rule: RuleName = "most_recent"
    # for ``source_priority``: first listed wins; unlisted sources come after all listed
    source_priority: list[str] = Field(default_factory=lambda: ["crm", "shop_customers", "third_party", "web_events"])
    attributes: dict[Attribute, RuleName] = Field(default_factory=_default_attribute_rules)
    # attributes taken together from one record (no street from one address and postcode
    # from another); the group is decided by its first attribute's rule and value
    groups: list[list[Attribute]] = Field(default_factory=_default_groups)

    @model_validator(mode="after")
    def _groups_are_disjoint(self) -> SurvivorshipRules:
        seen: set[str] = set()
        for group in self.groups:
            if not group:
                raise ValueError("groups: a group needs at least one attribute")
            overlap = seen.intersection(group)
            if overlap:
                raise ValueError(f"groups: {sorted(overlap)} listed in more than one group")
            seen.update(group)
        return self

    def rule_for(self, attribute: str) -> RuleName:
        # an attribute the config model does not name (a key it rejects) takes the default rule
        return self.attributes.get(cast("Attribute", attribute), self.default_rule)

    def units(self) -> list[tuple[str, ...]]:
        """Attribute groups in profile order; an ungrouped attribute is a group of one."""
        grouped: dict[str, tuple[str, ...]] = {a: tuple(g) for g in self.groups for a in g}
        units: list[tuple[str, ...]] = []
        for attribute in ATTRIBUTES:
            unit = grouped.get(attribute, (attribute,))
            if unit not in units:
                units.append(unit)
        return units


def _recency() -> Column:
    from pyspark.sql import functions as F

    return F.coalesce(-F.unix_micros(F.col("updated_at")), F.lit(_NEVER))


def _sort_key(rule: str, key: str, rules: SurvivorshipRules) -> Column:
    """Smallest wins; null (attribute missing on the record) never wins."""
    from pyspark.sql import functions as F

    if rule == "most_recent":
        fields = [_recency()]
    elif rule == "source_priority":
        priority = F.array_position(F.array(*[F.lit(s) for s in rules.source_priority]), F.col("source"))
        fields = [
            F.when(priority > 0, priority).otherwise(F.lit(len(rules.source_priority) + 1)),
            _recency(),
        ]
    elif rule == "most_frequent":
        fields = [-F.col(f"_freq_{key}"), _recency()]
    elif rule == "longest":
        fields = [-F.length(F.col(key).cast("string")), _recency()]
    else:  # pragma: no cover - the config model admits only the four rules
        raise ValueError(f"unknown survivorship rule {rule!r}")
    fields.append(F.col("record_id"))
    named = [f.alias(f"k{i}") for i, f in enumerate(fields)]
    return F.when(F.col(key).isNotNull(), F.struct(*named))


def golden_records(
    records: DataFrame,
    id_map: DataFrame,
    rules: SurvivorshipRules,
    *,
    run_id: str,
) -> DataFrame:
    """One golden record per ``customer_id`` (``gold.customer_profile`` schema).

    Args:
        records: ``silver.customer_records`` rows.
        id_map: ``record_id, customer_id`` (``identity.id_map``).
        rules: which rule decides each attribute.
        run_id: stamped on every row.

    Returns:
        The profiles; ``provenance`` maps each attribute that has a value to the
        ``record_id`` and ``source`` it came from; ``first_seen_at`` / ``updated_at`` are
        the earliest / latest ``updated_at`` of the customer's records.

    Example:
        >>> golden_records(records, id_map, SurvivorshipRules(), run_id="r1")
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from lakecdp.columns import require_columns

    require_columns(records, RECORD_COLUMNS, what="customer records")
    require_columns(id_map, ("record_id", "customer_id"), what="id_map")
    members = records.select(*RECORD_COLUMNS).join(id_map.select("record_id", "customer_id"), "record_id")
    units = rules.units()
    for unit in units:
        key = unit[0]
        if rules.rule_for(key) == "most_frequent":
            members = members.withColumn(
                f"_freq_{key}",
                F.when(
                    F.col(key).isNotNull(),
                    F.count(F.lit(1)).over(Window.partitionBy("customer_id", key)),
                ),
            )

    winners = []
    for index, unit in enumerate(units):
        chosen = F.struct(*[F.col(c) for c in unit], "record_id", "source")
        winners.append(F.min_by(chosen, _sort_key(rules.rule_for(unit[0]), unit[0], rules)).alias(f"_u{index}"))

    def known(column: str) -> Column:
        return F.array_sort(F.collect_set(column))

    profiles = members.groupBy("customer_id").agg(
        *winners,
        known("email").alias("emails"),
        known("phone").alias("phones"),
        F.array_sort(
            F.array_distinct(
                F.flatten(F.collect_list(F.coalesce(F.col("device_ids"), F.array().cast("array<string>"))))
            )
        ).alias("device_ids"),
        known("record_id").alias("record_ids"),
        known("source").alias("sources"),
        F.min("updated_at").alias("first_seen_at"),
        F.max("updated_at").alias("updated_at"),
    )

    unit_of = {attribute: index for index, unit in enumerate(units) for attribute in unit}
    provenance_entries = []
    for attribute in ATTRIBUTES:
        won = F.col(f"_u{unit_of[attribute]}")
        provenance_entries += [
            F.lit(attribute),
            F.when(
                won[attribute].isNotNull(),
                F.struct(won["record_id"].alias("record_id"), won["source"].alias("source")),
            ),
        ]
    provenance = F.map_filter(F.create_map(*provenance_entries), lambda _, v: v.isNotNull())
    return profiles.select(
        "customer_id",
        *[F.col(f"_u{unit_of[a]}")[a].alias(a) for a in ATTRIBUTES],
        "emails",
        "phones",
        "device_ids",
        "record_ids",
        "sources",
        provenance.alias("provenance"),
        "first_seen_at",
        "updated_at",
        F.lit(run_id).alias("run_id"),
    )


def _sort_key_sql(rule: str, key: str, rules: SurvivorshipRules) -> str:
    """:func:`_sort_key` in DuckDB SQL over ``members`` (a struct: smallest wins)."""
    recency = f"coalesce(-epoch_us(updated_at), {_NEVER})"
    if rule == "most_recent":
        fields = [recency]
    elif rule == "source_priority":
        # names come from validated config; quoted as SQL strings
        listed = ", ".join("'" + s.replace("'", "''") + "'" for s in rules.source_priority)
        position = f"list_position([{listed}]::VARCHAR[], source)" if listed else "NULL"
        fields = [f"coalesce({position}, {len(rules.source_priority) + 1})", recency]
    elif rule == "most_frequent":
        fields = [f'-"_freq_{key}"', recency]
    elif rule == "longest":
        fields = [f'-length(CAST("{key}" AS VARCHAR))', recency]
    else:  # pragma: no cover - the config model admits only the four rules
        raise ValueError(f"unknown survivorship rule {rule!r}")
    fields.append("record_id")
    return "struct_pack(" + ", ".join(f"k{i} := {f}" for i, f in enumerate(fields)) + ")"


def golden_records_local(records: pa.Table, id_map: pa.Table, rules: SurvivorshipRules, *, run_id: str) -> pa.Table:
    """:func:`golden_records` in DuckDB over Arrow tables (the duckdb backend): the same
    rows, as an Arrow table in ``gold.customer_profile``'s columns and types.

    Args:
        records: ``silver.customer_records`` rows (Arrow).
        id_map: ``record_id, customer_id`` (Arrow).
        rules: which rule decides each attribute.
        run_id: stamped on every row.
    """
    import duckdb

    from lakecdp.columns import require_columns
    from lakecdp.delta_store import conform

    require_columns(records, RECORD_COLUMNS, what="customer records")
    require_columns(id_map, ("record_id", "customer_id"), what="id_map")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("survivor_records", records.select(list(RECORD_COLUMNS)))
        con.register("survivor_ids", id_map.select(["record_id", "customer_id"]))
        units = rules.units()
        frequencies = [
            f'CASE WHEN "{unit[0]}" IS NOT NULL THEN count(*) OVER (PARTITION BY customer_id, "{unit[0]}") END '
            f'AS "_freq_{unit[0]}"'
            for unit in units
            if rules.rule_for(unit[0]) == "most_frequent"
        ]
        con.execute(
            "CREATE TEMP TABLE members AS SELECT r.*, i.customer_id"
            + "".join(f", {f}" for f in frequencies)
            + " FROM survivor_records r JOIN survivor_ids i USING (record_id)"
        )
        winners = []
        for index, unit in enumerate(units):
            chosen = "struct_pack(" + ", ".join(f'"{c}" := "{c}"' for c in (*unit, "record_id", "source")) + ")"
            key = _sort_key_sql(rules.rule_for(unit[0]), unit[0], rules)
            winners.append(f'arg_min({chosen}, {key}) FILTER (WHERE "{unit[0]}" IS NOT NULL) AS _u{index}')

        def known(column: str) -> str:
            return f"list_sort(list_distinct(list({column})))"

        unit_of = {attribute: index for index, unit in enumerate(units) for attribute in unit}
        entries = ", ".join(
            f"struct_pack(key := '{a}', value := CASE WHEN _u{unit_of[a]}.\"{a}\" IS NOT NULL THEN "
            f"struct_pack(record_id := _u{unit_of[a]}.record_id, source := _u{unit_of[a]}.source) END)"
            for a in ATTRIBUTES
        )
        # Spark's array_distinct keeps one null; array_sort puts it last
        flat = "flatten(list(coalesce(device_ids, []::VARCHAR[])))"
        devices = (
            f"list_sort(list_distinct({flat})) || "
            f"CASE WHEN list_count({flat}) < len({flat}) THEN [NULL::VARCHAR] ELSE []::VARCHAR[] END"
        )
        profiles = con.sql(
            f"""
            WITH won AS (
                SELECT customer_id, {", ".join(winners)},
                       {known("email")} AS emails, {known("phone")} AS phones, {devices} AS device_ids,
                       {known("record_id")} AS record_ids, {known("source")} AS sources,
                       min(updated_at) AS first_seen_at, max(updated_at) AS updated_at
                FROM members GROUP BY customer_id
            )
            SELECT customer_id, {", ".join(f'_u{unit_of[a]}."{a}" AS "{a}"' for a in ATTRIBUTES)},
                   emails, phones, device_ids, record_ids, sources,
                   map_from_entries(list_filter([{entries}], lambda e: e.value IS NOT NULL)) AS provenance,
                   first_seen_at, updated_at, $run_id AS run_id
            FROM won ORDER BY customer_id
            """,
            params={"run_id": run_id},
        ).to_arrow_table()
    finally:
        con.close()
    return conform(profiles, PROFILE_SCHEMA)
