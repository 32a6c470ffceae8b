"""The identity steps in DuckDB over Arrow, for the ``duckdb`` backend (one machine).

The same definitions as the Spark transformations in :mod:`lakecdp.identity.prepare`
(:func:`~lakecdp.identity.prepare.prepare_for_matching`),
:mod:`lakecdp.identity.deterministic` (:func:`~lakecdp.identity.deterministic.identifier_values`,
:func:`~lakecdp.identity.deterministic.deterministic_edges`) and
:mod:`lakecdp.identity.job` (link-only, run ids of edges found again), written as DuckDB SQL
over the records read once from Delta as Arrow. On 5,000 records each Spark version costs
seconds of job scheduling for milliseconds of work; here the records stay in one process
from reading to clustering, and Spark only writes the results.

Both paths give the same rows (``tests/test_identity_local.py`` runs both on the same
records). Where Spark's Java regular expressions and DuckDB's RE2 differ, the SQL is
written so the result does not: whitespace is the explicit class ``[ \\t\\n\\x0B\\f\\r]``
(Java's ``\\s``); word boundaries (``\\b``) in a normalised street fall only between
space-separated tokens, so street types and house numbers are matched token by token;
junk patterns, soundex and the nickname lookups are computed in Python over the distinct
values (Python's ``re`` with ``re.ASCII`` reads the junk patterns as Java does).

Example:
    >>> local = LocalRecords(records.toArrow(), config)
    >>> prepared = local.prepared()          # pa.Table, PREPARED_COLUMNS
    >>> edges = local.deterministic_edges(run_id="r1")
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from lakecdp.identity.deterministic import REQUIRED_COLUMNS, _ACCENTED, _PLAIN, nickname_lookup

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from datetime import datetime

    from lakecdp.identity.config import DuckDBSettings, IdentifierRule, IdentifierType, IdentityConfig

logger = logging.getLogger(__name__)

# Java's \s (Spark's regular expressions): RE2's \s lacks the vertical tab
_WS = r"[ \t\n\x0B\f\r]"
_WS_CHARS = r" \t\n\x0B\f\r"
_HOUSE_NUMBER = "[0-9]+[a-z]?"  # Java's \d is ASCII unless asked otherwise
EDGE_COLUMNS = ("record_id_l", "record_id_r", "edge_type", "rule", "match_probability", "match_weight", "run_id")


def duckdb_connection(settings: DuckDBSettings) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB database with the configured memory limit and spill folder.

    Args:
        settings: ``duckdb`` of conf/identity.yaml (``temp_directory`` already absolute,
            :meth:`lakecdp.identity.config.IdentityConfig.with_project_root`).

    Returns:
        The connection; without a configured folder it spills to a folder of its own in
        the system temp dir (DuckDB's default, ``.tmp`` in the working directory, is shared
        by every database started there), made and removed by DuckDB.
    """
    import tempfile
    import uuid
    from pathlib import Path

    import duckdb

    base = Path(settings.temp_directory) if settings.temp_directory else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)  # DuckDB makes the last folder only
    spill = base / f"lakecdp-duckdb-{uuid.uuid4().hex[:12]}"
    return duckdb.connect(config={"memory_limit": settings.memory_limit, "temp_directory": str(spill)})


# -- SQL expressions over one column (identifiers come from code, never from data) -------
def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def normalised_name_sql(column: str) -> str:
    """:func:`lakecdp.identity.deterministic.normalised_name` in DuckDB SQL."""
    folded = f"translate(replace(lower({column}), 'ß', 'ss'), {_quote(_ACCENTED)}, {_quote(_PLAIN)})"
    cleaned = f"trim(regexp_replace({folded}, '[^\\p{{L}}{_WS_CHARS}-]', '', 'g'))"
    cleaned = f"regexp_replace({cleaned}, '{_WS}+', ' ', 'g')"
    return f"nullif({cleaned}, '')"


def normalised_street_sql(column: str) -> str:
    """:func:`lakecdp.identity.prepare.normalised_street` in DuckDB SQL.

    Punctuation is replaced by spaces first, so every character left is a letter, a digit
    or whitespace: a ``\\bstreet\\b`` boundary is a token edge, and mapping whole tokens
    equals Spark's regex replacements (no abbreviation is itself a street word)."""
    from lakecdp.identity.prepare import STREET_ABBREVIATIONS

    cleaned = f"regexp_replace(lower({column}), '[^\\p{{L}}\\p{{N}}{_WS_CHARS}]', ' ', 'g')"
    tokens = f"list_filter(regexp_split_to_array({cleaned}, '{_WS}+'), lambda t: t <> '')"
    cases = " ".join(f"when {_quote(word)} then {_quote(short)}" for word, short in STREET_ABBREVIATIONS.items())
    mapped = f"list_transform({tokens}, lambda t: case t {cases} else t end)"
    return f"nullif(array_to_string({mapped}, ' '), '')"


def street_number_sql(street: str) -> str:
    """The first token of a normalised street that is a house number, or null."""
    return f"list_filter(string_split({street}, ' '), lambda t: regexp_full_match(t, '{_HOUSE_NUMBER}'))[1]"


def street_name_sql(street: str) -> str:
    """A normalised street without its house-number tokens, or null."""
    kept = f"list_filter(string_split({street}, ' '), lambda t: not regexp_full_match(t, '{_HOUSE_NUMBER}'))"
    return f"nullif(array_to_string({kept}, ' '), '')"


def normalised_postcode_sql(column: str) -> str:
    # Java upper-cases "ß" to "SS"; DuckDB to the capital sharp s, which the class drops
    return f"nullif(regexp_replace(upper(replace({column}, 'ß', 'ss')), '[^A-Z0-9]', '', 'g'), '')"


def birth_date_text_sql(date_column: str, raw_column: str) -> str:
    digits = f"regexp_replace({raw_column}, '[^0-9]', '', 'g')"
    usable = f"length({digits}) = 8 and regexp_matches({digits}, '^(18|19|20)')"
    return f"coalesce(strftime({date_column}, '%Y%m%d'), case when {usable} then {digits} end)"


def normalised_identifier_sql(identifier_type: str, column: str) -> str:
    """:func:`lakecdp.identity.deterministic.normalised_identifier` in DuckDB SQL."""
    value = f"trim({column})"
    if identifier_type == "email":
        value = f"lower({value})"
    elif identifier_type == "phone":
        value = f"regexp_replace({value}, '[{_WS_CHARS}().-]', '', 'g')"
    return f"nullif({value}, '')"


# -- Python over distinct values ---------------------------------------------------------
_SOUNDEX_CODES = dict(zip("abcdefghijklmnopqrstuvwxyz", "01230127022455012623017202"))


def spark_soundex(name: str | None) -> str | None:
    """Spark's ``soundex`` of the name's letters a-z (null without any): Spark's own
    variant, in which h and w are skipped without separating two equal codes and any
    other letter coded 0 does separate them."""
    if name is None:
        return None
    letters = re.sub("[^a-z]", "", name)
    if not letters:
        return None
    code = [letters[0].upper()]
    last = _SOUNDEX_CODES[letters[0]]
    for letter in letters[1:]:
        digit = _SOUNDEX_CODES[letter]
        if digit == "7":
            continue
        if digit != "0" and digit != last:
            code.append(digit)
            if len(code) > 3:
                break
        last = digit
    return "".join(code).ljust(4, "0")


def first_name_lookup(names: list[str], nicknames: dict[str, list[str]]) -> pa.Table:
    """Per normalised first name: canonical form, variants, nickname family, whether the
    nickname list knows it, soundex (the Spark columns of the same names)."""
    import pyarrow as pa

    canonical = nickname_lookup(nicknames)
    options: dict[str, set[str]] = {}
    families: dict[str, set[str]] = {}
    for name, variants in nicknames.items():
        for variant in variants:
            if variant.lower() != name.lower():
                options.setdefault(variant.lower(), set()).add(name.lower())
        members = {name.lower(), *(v.lower() for v in variants)}
        for member in members:
            families.setdefault(member, {member}).update(members)
    known = {n.lower() for name, variants in nicknames.items() for n in [name, *variants]}
    return pa.table(
        {
            "name": pa.array(names, pa.string()),
            "canonical": pa.array([canonical.get(n, n) for n in names], pa.string()),
            "variants": pa.array([sorted({n, *options.get(n, ())}) for n in names], pa.list_(pa.string())),
            "family": pa.array([sorted(families.get(n, {n})) for n in names], pa.list_(pa.string())),
            "known": pa.array([n in known for n in names], pa.bool_()),
            "soundex": pa.array([spark_soundex(n) for n in names], pa.string()),
        }
    )


def junk_values(values: list[str], junk: list[str], patterns: list[str]) -> list[str]:
    """The values that are junk: a listed value (case-insensitive) or a pattern found."""
    listed = {v.lower() for v in junk}
    compiled = _any_of(patterns)
    return [v for v in values if v.lower() in listed or any(p.search(v) for p in compiled)]


# a pattern that refers to its own groups (\1, (?P=name), (?(1)...)) keeps its numbering alone
_GROUP_REFERENCE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")


def _any_of(patterns: list[str]) -> list[re.Pattern[str]]:
    """The patterns as few regexes as can be: those without group references joined as one
    alternation (found in a value exactly when one of them is; one pass per value instead of
    one per pattern), the others apart. Patterns that cannot be joined (inline flags, two
    groups of one name) stay apart."""
    alone = [p for p in patterns if _GROUP_REFERENCE.search(p)]
    joinable = [p for p in patterns if not _GROUP_REFERENCE.search(p)]
    if len(joinable) > 1:
        try:
            joined = [re.compile("|".join(f"(?:{p})" for p in joinable), re.ASCII)]
        except re.error:
            joined = [re.compile(p, re.ASCII) for p in joinable]
    else:
        joined = [re.compile(p, re.ASCII) for p in joinable]
    return joined + [re.compile(p, re.ASCII) for p in alone]


# -- the records --------------------------------------------------------------------------
class LocalRecords:
    """``silver.customer_records`` (as Arrow) in one DuckDB connection: prepared for
    matching, identifier values and deterministic edges.

    Args:
        records: the silver rows (at least the matching and identifier columns).
        config: the identity config.
        connection: a DuckDB connection to work in (default: a new in-memory one).
    """

    def __init__(
        self, records: pa.Table, config: IdentityConfig, *, connection: duckdb.DuckDBPyConnection | None = None
    ) -> None:

        from lakecdp.columns import require_columns
        from lakecdp.identity.prepare import MATCH_INPUT_COLUMNS

        require_columns(records, (*MATCH_INPUT_COLUMNS, *REQUIRED_COLUMNS), what="customer records")
        self.config = config
        self.con = connection or duckdb_connection(config.duckdb)
        self.columns = set(records.column_names)
        import pyarrow as pa

        # the row order of the input is kept: Splink's u sampling depends on it
        self.con.register(
            "silver_records", records.append_column("_row", pa.array(range(records.num_rows), pa.int64()))
        )
        self._prepared: pa.Table | None = None
        self._values: pa.Table | None = None
        self._normalise()

    def _optional(self, column: str) -> str:
        return f"s.{column}" if column in self.columns else "cast(null as varchar)"

    def _normalise(self) -> None:
        """Normalised names and identifiers, then the Python lookups over distinct values."""
        con, rules = self.con, {r.type: r for r in self.config.deterministic.identifiers}
        email = normalised_identifier_sql("email", "email")
        phone = normalised_identifier_sql("phone", "phone")
        con.execute(f"""
            create or replace temp table normalised as
            select record_id,
                   {normalised_name_sql("first_name")} as first_name,
                   {normalised_name_sql("last_name")} as last_name,
                   {normalised_name_sql(self._optional("middle_name"))} as middle_name,
                   {email} as email, {phone} as phone
            from silver_records s
        """)
        firsts = [
            r[0]
            for r in con.execute("select distinct first_name from normalised where first_name is not null").fetchall()
        ]
        lasts = [
            r[0]
            for r in con.execute("select distinct last_name from normalised where last_name is not null").fetchall()
        ]
        con.register("first_names", first_name_lookup(firsts, self.config.model.nicknames))
        import pyarrow as pa

        con.register(
            "last_names",
            pa.table(
                {
                    "name": pa.array(lasts, pa.string()),
                    "soundex": pa.array([spark_soundex(n) for n in lasts], pa.string()),
                }
            ),
        )
        self._identifier_values(rules)
        junk_rows: list[tuple[str, str]] = []
        for identifier_type, rule in rules.items():
            if not (rule.junk_values or rule.junk_patterns):
                continue
            # the values of the identifier; the email and phone columns of ``normalised`` are
            # the same expressions over the same columns, so they hold no other value
            distinct = (
                con.sql(
                    "select distinct value from raw_identifier_values where identifier_type = ?",
                    params=[identifier_type],
                )
                .to_arrow_table()
                .column("value")
                .to_pylist()
            )
            junk_rows += [(identifier_type, v) for v in junk_values(distinct, rule.junk_values, rule.junk_patterns)]
        con.register(
            "junk",
            pa.table(
                {
                    "identifier_type": pa.array([t for t, _ in junk_rows], pa.string()),
                    "value": pa.array([v for _, v in junk_rows], pa.string()),
                }
            ),
        )

    def _identifier_values(self, rules: dict[IdentifierType, IdentifierRule]) -> None:
        sources = {
            "email": "email",
            "phone": "phone",
            "device_id": "unnest(device_ids)",
            "crm_id": "crm_id",
            "customer_number": "customer_number",
        }
        parts = []
        for identifier_type in rules:
            raw = sources[identifier_type]
            parts.append(
                f"select record_id, {_quote(identifier_type)} as identifier_type, "
                f"{normalised_identifier_sql(identifier_type, 'raw')} as value "
                f"from (select record_id, {raw} as raw from silver_records)"
            )
        union = (
            " union all ".join(parts)
            if parts
            else (
                "select null::varchar as record_id, null::varchar as identifier_type, "
                "null::varchar as value where false"
            )
        )
        self.con.execute(f"""
            create or replace temp table raw_identifier_values as
            select * from ({union}) where value is not null
        """)

    # -- prepared for matching --------------------------------------------------------
    def prepared(self) -> pa.Table:
        """:func:`lakecdp.identity.prepare.prepare_for_matching` of the records."""
        from lakecdp.identity.prepare import PREPARED_COLUMNS

        if self._prepared is not None:
            return self._prepared
        street = normalised_street_sql("s.address_line1")
        self.con.execute(f"""
            create or replace temp table prepared_streets as
            select record_id, {street} as address_line1 from silver_records s
        """)
        relation = self.con.sql(f"""
            select s.record_id, s.source,
                   n.first_name,
                   f.canonical as first_name_canonical,
                   f.variants as first_name_variants,
                   f.family as first_name_family,
                   coalesce(f.known, false) as first_name_known,
                   f.soundex as first_name_soundex,
                   n.middle_name,
                   n.last_name,
                   l.soundex as last_name_soundex,
                   case when n.first_name is not null and n.last_name is not null
                        then n.first_name || ' ' || n.last_name end as full_name,
                   {birth_date_text_sql("s.date_of_birth", self._optional("date_of_birth_text"))} as dob,
                   case when je.value is null then n.email end as email,
                   case when jp.value is null then n.phone end as phone,
                   p.address_line1,
                   {street_number_sql("p.address_line1")} as street_number,
                   {street_name_sql("p.address_line1")} as street_name,
                   {normalised_street_sql(self._optional("address_line2"))} as address_line2,
                   {normalised_postcode_sql("s.postcode")} as postcode,
                   lower(trim(s.city)) as city,
                   lower(trim({self._optional("region")})) as region,
                   upper(trim(s.country)) as country
            from silver_records s
            join normalised n using (record_id)
            join prepared_streets p using (record_id)
            left join first_names f on f.name = n.first_name
            left join last_names l on l.name = n.last_name
            left join junk je on je.identifier_type = 'email' and je.value = n.email
            left join junk jp on jp.identifier_type = 'phone' and jp.value = n.phone
            order by s._row
        """)
        self._prepared = relation.select(*PREPARED_COLUMNS).to_arrow_table()
        return self._prepared

    # -- deterministic evidence -------------------------------------------------------
    def identifier_values(self) -> pa.Table:
        """:func:`lakecdp.identity.deterministic.identifier_values`: ``record_id,
        person_key, identifier_type, value`` per record and non-junk identifier."""
        if self._values is not None:
            return self._values
        person_key = (
            "case when s.date_of_birth is not null or f.canonical is not null then "
            "coalesce(strftime(s.date_of_birth, '%Y-%m-%d'), '') || '|' || coalesce(f.canonical, '') end"
        )
        self.con.execute(f"""
            create or replace temp table identifier_values as
            select distinct v.record_id, {person_key} as person_key, v.identifier_type, v.value
            from raw_identifier_values v
            join silver_records s using (record_id)
            join normalised n using (record_id)
            left join first_names f on f.name = n.first_name
            anti join junk j on j.identifier_type = v.identifier_type and j.value = v.value
        """)
        self._values = self.con.sql(
            "select record_id, person_key, identifier_type, value from identifier_values "
            "order by identifier_type, value, record_id"
        ).to_arrow_table()
        return self._values

    def deterministic_edges(self, *, run_id: str | None) -> pa.Table:
        """:func:`lakecdp.identity.deterministic.deterministic_edges` (the edges)."""
        settings = self.config.deterministic
        if not settings.enabled or not settings.identifiers:
            return self.con.sql(_EMPTY_EDGES_SQL).to_arrow_table()
        self.identifier_values()
        limits = " ".join(
            f"when {_quote(r.type)} then {int(r.max_people_per_identifier)}" for r in settings.identifiers
        )
        return self.con.sql(
            f"""
            with v as (
                select *, split_part(person_key, '|', 1) <> '' as born,
                       split_part(person_key, '|', 2) as first
                from identifier_values
            ),
            -- a record without birth date is one more person only when no dated record of
            -- the value has its first name
            undated as (
                select identifier_type, value, first from v where not born
                except
                select identifier_type, value, first from v where born
            ),
            per_value as (
                select identifier_type, value,
                       count(distinct record_id) as record_count,
                       count(distinct person_key) filter (where born) as dated_people,
                       min(record_id) as hub_record_id
                from v group by identifier_type, value
            ),
            people as (
                select p.*, p.dated_people + coalesce(u.undated_people, 0) as people_count,
                       case p.identifier_type {limits} end as max_people
                from per_value p
                left join (select identifier_type, value, count(*) as undated_people
                           from undated group by identifier_type, value) u
                using (identifier_type, value)
            ),
            pairs as (
                select p.hub_record_id as record_id_l, v.record_id as record_id_r, v.identifier_type
                from v join people p using (identifier_type, value)
                where p.people_count <= p.max_people and p.record_count > 1
                  and v.record_id <> p.hub_record_id
            )
            select record_id_l, record_id_r, 'deterministic' as edge_type,
                   string_agg(distinct identifier_type, ',' order by identifier_type) as rule,
                   1.0::double as match_probability, null::double as match_weight,
                   cast(? as varchar) as run_id
            from pairs group by record_id_l, record_id_r
            order by record_id_l, record_id_r
        """,
            params=[run_id],
        ).to_arrow_table()


_EMPTY_EDGES_SQL = (
    "select null::varchar as record_id_l, null::varchar as record_id_r, null::varchar as edge_type, "
    "null::varchar as rule, null::double as match_probability, null::double as match_weight, "
    "null::varchar as run_id where false"
)


def final_edges(
    con: duckdb.DuckDBPyConnection,
    *,
    deterministic: pa.Table,
    probabilistic: pa.Table,
    sources: pa.Table,
    unique: list[str],
    previous: pa.Table | None,
) -> pa.Table:
    """The run's ``identity.edges`` rows: deterministic + probabilistic, minus links inside a
    source declared unique (:func:`lakecdp.identity.job.without_links_inside`), with the
    run id of an edge found again with the same probability kept
    (:func:`lakecdp.identity.job._keep_previous_run_ids`).

    Args:
        sources: ``record_id, source`` of every record.
        previous: the last run's ``identity.edges`` (None on a first run).
    """
    import pyarrow as pa

    con.register("edges_deterministic", deterministic.select(list(EDGE_COLUMNS)))
    con.register("edges_probabilistic", probabilistic.select(list(EDGE_COLUMNS)))
    con.register("edge_sources", sources.select(["record_id", "source"]))
    con.register("unique_sources", pa.table({"source": pa.array(unique, pa.string())}))
    previous_sql = "select * from edges_previous"
    if previous is None:
        previous_sql = _EMPTY_EDGES_SQL
    else:
        con.register("edges_previous", previous.select(list(EDGE_COLUMNS)))
    return con.sql(f"""
        with edges as (
            select * from edges_deterministic union all select * from edges_probabilistic
        ),
        linked as (
            select e.* from edges e
            left join edge_sources l on l.record_id = e.record_id_l
            left join edge_sources r on r.record_id = e.record_id_r
            where not coalesce(l.source = r.source
                               and l.source in (select source from unique_sources), false)
        ),
        previous as ({previous_sql})
        select e.record_id_l, e.record_id_r, e.edge_type, e.rule, e.match_probability,
               e.match_weight,
               case when p.match_probability is not distinct from e.match_probability
                    then p.run_id else e.run_id end as run_id
        from linked e
        left join previous p
          on p.record_id_l = e.record_id_l and p.record_id_r = e.record_id_r
         and p.edge_type = e.edge_type and p.rule = e.rule
        order by e.edge_type, e.record_id_l, e.record_id_r
    """).to_arrow_table()


def kept_edges_local(con: duckdb.DuckDBPyConnection, edges: pa.Table, nodes: pa.Table, threshold: float) -> pa.Table:
    """:func:`lakecdp.identity.clustering.kept_edges` between ``nodes`` (``record_id``):
    the edges clustering follows, ``record_id_l, record_id_r, p`` (one row per pair)."""
    con.register("cluster_edges_in", edges.select(["record_id_l", "record_id_r", "edge_type", "match_probability"]))
    con.register("cluster_nodes", nodes.select(["record_id"]))
    return con.sql(
        """
        select record_id_l, record_id_r, max(p) as p from (
            select record_id_l, record_id_r,
                   case when edge_type = 'deterministic' then 1.0 else match_probability end as p
            from cluster_edges_in
            where record_id_l in (select record_id from cluster_nodes)
              and record_id_r in (select record_id from cluster_nodes)
        )
        where p >= ? and record_id_l <> record_id_r
        group by record_id_l, record_id_r
        order by record_id_l, record_id_r
    """,
        params=[threshold],
    ).to_arrow_table()


def kept_edge_rows(
    con: duckdb.DuckDBPyConnection, edges: pa.Table, nodes: pa.Table, threshold: float
) -> list[tuple[str, str, float]]:
    """:func:`kept_edges_local` as Python rows."""
    kept = kept_edges_local(con, edges, nodes, threshold)
    return list(zip(*(kept.column(c).to_pylist() for c in ("record_id_l", "record_id_r", "p")), strict=True))


def assign_customer_ids_local(
    clusters: pa.Table,
    previous: pa.Table | None,
    *,
    run_id: str,
    as_of: datetime,
    id_prefix: str,
) -> tuple[pa.Table, pa.Table]:
    """:func:`lakecdp.identity.stable_ids.assign_customer_ids` in DuckDB: the same rules,
    as SQL over Arrow tables (``clusters`` with a ``source`` column; ``previous``: the last
    ``identity.id_map`` or None). Returns ``(id_map, id_changes)`` as Arrow tables in the
    catalog's column order, timestamps in UTC."""
    import duckdb

    from lakecdp.identity.stable_ids import ID_MAP_COLUMNS

    con = duckdb.connect()
    as_of_utc = _naive_utc(as_of)
    con.register(
        "clusters", clusters.select(["record_id", "cluster_key", "cluster_size", "link_confidence", "flags", "source"])
    )
    if previous is None:
        con.execute("""
            create temp table previous (record_id varchar, customer_id varchar,
                cluster_size integer, link_confidence double, flags varchar[], run_id varchar,
                updated_at timestamp, id_created_at timestamp)
        """)
    else:
        con.register(
            "previous",
            _without_time_zones(
                previous.select(
                    [
                        "record_id",
                        "customer_id",
                        "cluster_size",
                        "link_confidence",
                        "flags",
                        "run_id",
                        "updated_at",
                        "id_created_at",
                    ]
                )
            ),
        )
    as_of_text = as_of_utc.strftime("%Y-%m-%dT%H:%M:%S.%f")
    best_id = "votes desc, id_created_at asc nulls last, prev_customer_id asc"
    best_cluster = "votes desc, members desc, cluster_key asc"
    steps = [
        """
        create temp table members as
        select c.record_id, c.cluster_key, c.cluster_size::integer as cluster_size,
               c.link_confidence::double as link_confidence, c.flags, c.source,
               p.customer_id as prev_customer_id, p.id_created_at as prev_id_created_at,
               p.cluster_size as prev_cluster_size, p.link_confidence as prev_link_confidence,
               p.flags as prev_flags, p.run_id as prev_run_id, p.updated_at as prev_updated_at
        from clusters c left join previous p using (record_id)
        """,
        """
        create temp table cluster_facts as
        select f.*, m.prev_customer_id as min_record_prev_id
        from (select cluster_key, count(*) as members, min(record_id) as min_record_id,
                     count(prev_customer_id) as previously_known
              from members group by cluster_key) f
        join members m on m.record_id = f.min_record_id
        """,
        """
        create temp table votes as
        select v.*, f.members from (
            select cluster_key, prev_customer_id, count(*) as votes,
                   min(prev_id_created_at) as id_created_at
            from members where prev_customer_id is not null
            group by cluster_key, prev_customer_id
        ) v join cluster_facts f using (cluster_key)
        """,
        f"""
        -- pass 1: each previous id goes home to the cluster holding most of its records,
        -- a cluster keeps the best id homed with it
        create temp table first_choice as
        select cluster_key, prev_customer_id, id_created_at from (
            select *, row_number() over (partition by cluster_key order by {best_id}) as rank
            from (select *, row_number() over (partition by prev_customer_id
                                               order by {best_cluster}) = 1 as home
                  from votes)
            where home
        ) where rank = 1
        """,
        f"""
        -- pass 2: a cluster left without an id takes the best free id it voted for
        create temp table fallback as
        select cluster_key, prev_customer_id, id_created_at from (
            select *, row_number() over (partition by prev_customer_id order by {best_cluster}) as rank2
            from (
                select *, row_number() over (partition by cluster_key order by {best_id}) as rank1
                from votes
                where cluster_key not in (select cluster_key from first_choice)
                  and prev_customer_id not in (select prev_customer_id from first_choice)
            ) where rank1 = 1
        ) where rank2 = 1
        """,
        """
        create temp table cluster_ids as
        select f.cluster_key,
               coalesce(k.prev_customer_id,
                        $prefix || substr(sha256(f.min_record_id || '|' || $as_of_text || '|'
                                                 || coalesce(f.min_record_prev_id, '')), 1, 16))
                   as customer_id,
               coalesce(k.id_created_at, $as_of) as id_created_at,
               k.prev_customer_id is null as minted,
               f.previously_known, f.members
        from cluster_facts f
        left join (select * from first_choice union all select * from fallback) k using (cluster_key)
        """,
        """
        create temp table assigned as
        select m.*, i.customer_id, i.id_created_at
        from members m join cluster_ids i using (cluster_key)
        """,
    ]
    for step in steps[:-2]:
        con.execute(step)
    con.execute(steps[-2], {"prefix": id_prefix, "as_of_text": as_of_text, "as_of": as_of_utc})
    con.execute(steps[-1])
    unchanged = (
        "(prev_customer_id = customer_id and prev_cluster_size = cluster_size "
        "and prev_link_confidence is not distinct from link_confidence "
        "and prev_flags is not distinct from flags)"
    )
    id_map = (
        con.sql(
            f"""
        select record_id, customer_id, source, cluster_size, link_confidence, flags,
               case when {unchanged} then prev_run_id else $run_id end as run_id,
               case when {unchanged} then prev_updated_at else $as_of end as updated_at,
               id_created_at
        from assigned order by record_id
    """,
            params={"run_id": run_id, "as_of": as_of_utc},
        )
        .select(*ID_MAP_COLUMNS)
        .to_arrow_table()
    )
    changes = con.sql(
        """
        select $run_id as run_id,
               case when prev_customer_id in (select customer_id from cluster_ids)
                    then 'split' else 'merge' end as change_type,
               prev_customer_id as old_customer_id, customer_id as new_customer_id,
               count(*)::integer as record_count, $as_of as changed_at
        from assigned
        where prev_customer_id is not null and prev_customer_id <> customer_id
        group by prev_customer_id, customer_id
        union all
        select $run_id, 'new', null, customer_id, members::integer, $as_of
        from cluster_ids where minted and previously_known = 0
        order by change_type, new_customer_id, old_customer_id
    """,
        params={"run_id": run_id, "as_of": as_of_utc},
    ).to_arrow_table()
    con.close()
    return _in_utc(id_map), _in_utc(changes)


def _naive_utc(moment: datetime) -> datetime:
    from datetime import timezone

    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _without_time_zones(table: pa.Table) -> pa.Table:
    """Timestamps as naive UTC (how DuckDB compares them without a time zone setting)."""
    import pyarrow as pa

    fields = [pa.field(f.name, pa.timestamp("us")) if pa.types.is_timestamp(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


def _in_utc(table: pa.Table) -> pa.Table:
    import pyarrow as pa

    fields = [
        pa.field(f.name, pa.timestamp("us", tz="UTC")) if pa.types.is_timestamp(f.type) else f for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def customer_identifiers_local(values: pa.Table, id_map: pa.Table, *, run_id: str) -> pa.Table:
    """:func:`lakecdp.identity.job.customer_identifiers` in DuckDB: ``identity.identifiers``
    rows (a value held by more than one customer is left out)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("held_values", values.select(["record_id", "identifier_type", "value"]))
        con.register("owners", id_map.select(["record_id", "customer_id"]))
        return con.sql(
            """
            select identifier_type, value as identifier_value, min(customer_id) as customer_id,
                   $run_id as run_id
            from held_values join owners using (record_id)
            group by identifier_type, value
            having count(distinct customer_id) = 1
            order by identifier_type, identifier_value
            """,
            params={"run_id": run_id},
        ).to_arrow_table()
    finally:
        con.close()


def _kept_pairs_sql(table: str, threshold: float) -> str:
    """:func:`lakecdp.identity.clustering.kept_edges` of the edges ``table``: ``record_id_l,
    record_id_r, p`` (one row per pair)."""
    return f"""
        select record_id_l, record_id_r, max(p) as p from (
            select record_id_l, record_id_r,
                   case when edge_type = 'deterministic' then 1.0 else match_probability end as p
            from {table}
        )
        where p >= cast({float(threshold)!r} as double) and record_id_l <> record_id_r
        group by record_id_l, record_id_r
    """


def affected_records_local(
    changed: list[str],
    edges: pa.Table,
    previous_edges: pa.Table,
    previous_id_map: pa.Table,
    threshold: float,
    *,
    max_rounds: int = 50,
) -> list[str]:
    """:func:`lakecdp.identity.clustering.affected_records` in DuckDB: sorted ``record_id``
    of every record whose cluster, id or flags can differ from the last run (seeds: changed
    records and the ends of edges that appeared, vanished or changed; closed over whole
    previous customers and the new edges)."""
    import duckdb
    import pyarrow as pa

    columns = ["record_id_l", "record_id_r", "edge_type", "match_probability"]
    con = duckdb.connect()
    try:
        con.register("edges_now", edges.select(columns))
        con.register("edges_before", previous_edges.select(columns))
        con.register("owners", previous_id_map.select(["record_id", "customer_id"]))
        con.register("changed_records", pa.table({"record_id": pa.array(changed, pa.string())}))
        con.execute(f"create temp table new_pairs as {_kept_pairs_sql('edges_now', threshold)}")
        con.execute(f"""
            create temp table scope as
            with old_pairs as ({_kept_pairs_sql("edges_before", threshold)}),
            moved as (
                select coalesce(n.record_id_l, o.record_id_l) as record_id_l,
                       coalesce(n.record_id_r, o.record_id_r) as record_id_r
                from new_pairs n full outer join old_pairs o
                  on n.record_id_l = o.record_id_l and n.record_id_r = o.record_id_r
                where n.p is distinct from o.p
            )
            select record_id from changed_records
            union select record_id_l from moved
            union select record_id_r from moved
        """)
        for _ in range(max_rounds):
            # whole previous customers, then the records one new edge away
            con.execute("""
                insert into scope
                select distinct o.record_id from owners o
                where o.customer_id in (select w.customer_id from owners w join scope s using (record_id))
                  and o.record_id not in (select record_id from scope)
            """)
            reached = con.execute("""
                insert into scope
                select distinct reached from (
                    select case when l.record_id is null then e.record_id_l else e.record_id_r end as reached
                    from new_pairs e
                    left join scope l on l.record_id = e.record_id_l
                    left join scope r on r.record_id = e.record_id_r
                    where (l.record_id is null) <> (r.record_id is null)
                )
            """).fetchone()
            if reached is None or reached[0] == 0:
                return [r[0] for r in con.execute("select record_id from scope order by record_id").fetchall()]
        raise RuntimeError(f"affected records still growing after {max_rounds} rounds")
    finally:
        con.close()
