"""Preview (render templates for chosen customers to files) and validation (render every
template against a sample of real profiles and report problems with line numbers)."""

from __future__ import annotations

import logging
import re
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateSyntaxError
from pyspark.sql import functions as F

from lakecdp import catalog
from lakecdp.personalization.config import PersonalizationConfig
from lakecdp.personalization.customers import (
    FEATURE_COLUMNS,
    PROFILE_COLUMNS,
    customer_rows,
    customer_rows_sql,
    embedded_row,
    template_context,
)
from lakecdp.personalization.engine import TemplateEngine

if TYPE_CHECKING:
    from lakecdp.config import Project
    from lakecdp.context import JobContext
    from lakecdp.delta_store import DeltaStore
    from lakecdp.tables import Tables

logger = logging.getLogger(__name__)


# -- loading contexts (IO) ---------------------------------------------------------------
def load_contexts(
    spark,
    tables: Tables,
    config: PersonalizationConfig,
    *,
    customer_ids: list[str] | None = None,
    segment: str | None = None,
    limit: int | None = None,
    campaign_id: str | None = None,
) -> list[dict[str, Any]]:
    """Template contexts for the chosen customers (by id, by current segment, or the first
    ``limit`` by id), read from gold.customer_profile and, when they exist, features,
    segments.membership and silver.products."""

    def optional(name: str):
        return tables.read(spark, name) if tables.exists(spark, name) else None

    if not tables.exists(spark, catalog.CUSTOMER_PROFILE.name):
        return []
    profile = tables.read(spark, catalog.CUSTOMER_PROFILE.name)
    membership = optional(catalog.MEMBERSHIP.name)
    if customer_ids:
        profile = profile.where(F.col("customer_id").isin(customer_ids))
    if segment is not None:
        if membership is None:
            return []
        members = membership.where(F.col("is_current") & (F.col("segment_id") == segment)).select("customer_id")
        profile = profile.join(members.distinct(), "customer_id", "left_semi")
    profile = profile.orderBy("customer_id")
    if limit is not None:
        profile = profile.limit(limit)
    rows = customer_rows(
        profile,
        features=optional(catalog.CUSTOMER_FEATURES.name),
        membership=membership,
        products=optional(catalog.PRODUCTS.name),
    )
    return [
        template_context(r.asDict(recursive=True), config, campaign_id=campaign_id)
        for r in rows.orderBy("customer_id").collect()
    ]


def contexts_for(
    ctx: JobContext,
    config: PersonalizationConfig,
    *,
    customer_ids: list[str] | None = None,
    segment: str | None = None,
    limit: int | None = None,
    campaign_id: str | None = None,
) -> list[dict[str, Any]]:
    """:func:`load_contexts` on the run's engine: DuckDB over delta-rs on ``engine: embedded``
    (path-based tables; :func:`load_contexts_embedded`, no Spark session), else Spark."""
    from lakecdp.delta_store import embedded_store

    store = embedded_store(ctx, label="lakecdp-personalization")
    options: dict[str, Any] = {
        "customer_ids": customer_ids,
        "segment": segment,
        "limit": limit,
        "campaign_id": campaign_id,
    }
    if store is not None:
        return load_contexts_embedded(store, config, **options)
    return load_contexts(ctx.spark, ctx.tables, config, **options)


def load_contexts_embedded(
    store: DeltaStore,
    config: PersonalizationConfig,
    *,
    customer_ids: list[str] | None = None,
    segment: str | None = None,
    limit: int | None = None,
    campaign_id: str | None = None,
) -> list[dict[str, Any]]:
    """:func:`load_contexts` on DuckDB over the tables' live files (:meth:`DeltaStore.load`):
    the same customers in the same order, and the same Python values in each context (the
    rows of :func:`~lakecdp.personalization.customers.customer_rows_sql` are what Spark's
    ``Row.asDict`` gives; tests/test_personalization_engines.py renders both)."""
    import duckdb

    if not store.exists(catalog.CUSTOMER_PROFILE.name):
        return []
    present = {
        table.name: store.exists(table.name)
        for table in (catalog.CUSTOMER_FEATURES, catalog.MEMBERSHIP, catalog.PRODUCTS)
    }
    if segment is not None and not present[catalog.MEMBERSHIP.name]:
        return []
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        where = "WHERE list_contains(?, customer_id)" if customer_ids else ""
        store.load(
            con,
            "chosen",
            catalog.CUSTOMER_PROFILE.name,
            columns=list(PROFILE_COLUMNS),
            where=where,
            params=[list(customer_ids)] if customer_ids else [],
        )
        if present[catalog.MEMBERSHIP.name]:
            columns = ["customer_id", "segment_id", "member_key", "is_current"]
            store.load(con, "membership", catalog.MEMBERSHIP.name, columns=columns, where="WHERE is_current")
        # Spark's orderBy: ascending, nulls first; then the limit
        in_segment = "WHERE customer_id IN (SELECT customer_id FROM membership WHERE segment_id = $segment)"
        con.execute(
            f"CREATE TABLE profile AS SELECT * FROM chosen {in_segment if segment is not None else ''}"
            f" ORDER BY customer_id NULLS FIRST {'LIMIT $limit' if limit is not None else ''}",
            {k: v for k, v in (("segment", segment), ("limit", limit)) if v is not None},
        )
        wanted = "WHERE customer_id IN (SELECT customer_id FROM profile)"
        if present[catalog.CUSTOMER_FEATURES.name]:
            columns = ["customer_id", *FEATURE_COLUMNS]
            store.load(con, "features", catalog.CUSTOMER_FEATURES.name, columns=columns, where=wanted)
        if present[catalog.PRODUCTS.name]:
            store.load(con, "products", catalog.PRODUCTS.name, columns=["product_id", "name"])
        sql = customer_rows_sql(
            features=present[catalog.CUSTOMER_FEATURES.name],
            membership=present[catalog.MEMBERSHIP.name],
            products=present[catalog.PRODUCTS.name],
        )
        rows = con.sql(sql).to_arrow_table().to_pylist()
    finally:
        con.close()
    return [template_context(embedded_row(row), config, campaign_id=campaign_id) for row in rows]


# -- preview --------------------------------------------------------------------------
@dataclass
class PreviewFile:
    customer_id: str
    path: Path
    variant: str | None
    missing: set[str]
    fallbacks: set[str]


def render_previews(
    engine: TemplateEngine, template: str, contexts: list[dict[str, Any]], *, output_dir: Path
) -> list[PreviewFile]:
    """Render ``template`` for each context into ``<output_dir>/<template stem>/<customer_id>.<ext>``."""
    stem, suffix = Path(template).stem, Path(template).suffix
    folder = output_dir / stem
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for context in contexts:
        rendered = engine.render(template, context)
        customer_id = re.sub(r"[^A-Za-z0-9_\-.]", "_", str(context["customer_id"]))
        path = folder / f"{customer_id}{suffix}"
        path.write_text(rendered.text, encoding="utf-8")
        results.append(
            PreviewFile(str(context["customer_id"]), path, context.get("variant"), rendered.missing, rendered.fallbacks)
        )
    return results


# -- validation -----------------------------------------------------------------------
@dataclass
class TemplateIssue:
    template: str
    kind: str  # syntax_error | render_error | missing_field | fallback_used | no_sample
    detail: str
    line: int | None = None
    customers: int = 0

    @property
    def is_error(self) -> bool:
        return self.kind in ("syntax_error", "render_error")

    def __str__(self) -> str:
        where = f"{self.template}:{self.line}" if self.line else self.template
        count = f" ({self.customers} customers)" if self.customers else ""
        return f"{where}: {self.kind}: {self.detail}{count}"


@dataclass
class ValidationReport:
    templates: list[str]
    samples: int
    issues: list[TemplateIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(i.is_error for i in self.issues)


def _template_line(exc: BaseException, engine: TemplateEngine) -> tuple[str | None, int | None]:
    """The innermost traceback frame inside a template file (Jinja rewrites them so)."""
    root = str(engine.templates_dir.resolve())
    found: tuple[str | None, int | None] = (None, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename and str(Path(frame.filename).resolve()).startswith(root):
            found = (Path(frame.filename).resolve().relative_to(root).as_posix(), frame.lineno)
    return found


def _first_line_using(source: str, name: str) -> int | None:
    pattern = re.compile(r"\b" + re.escape(name) + r"\b")
    for number, line in enumerate(source.splitlines(), start=1):
        if pattern.search(line):
            return number
    return None


def validate_templates(engine: TemplateEngine, contexts: list[dict[str, Any]]) -> ValidationReport:
    """Check every template's syntax, then render each renderable one against ``contexts``.

    Returns:
        Syntax errors (line numbers), render errors (line of the failing expression),
        missing fields and fallback usage (with the number of customers and the first line
        that names the field).
    """
    all_files = sorted(
        p.relative_to(engine.templates_dir).as_posix()
        for p in engine.templates_dir.rglob("*")
        if p.is_file() and p.suffix in (".html", ".txt")
    )
    report = ValidationReport(templates=engine.template_names(), samples=len(contexts))
    broken: set[str] = set()
    for name in all_files:
        try:
            engine.check_syntax(name)
        except TemplateSyntaxError as exc:
            broken.add(name)
            report.issues.append(TemplateIssue(name, "syntax_error", exc.message or str(exc), exc.lineno))
    for name in report.templates:
        if name in broken:
            continue
        if not contexts:
            report.issues.append(TemplateIssue(name, "no_sample", "no customer profiles to render against"))
            continue
        missing: Counter[str] = Counter()
        fallbacks: Counter[str] = Counter()
        failures: dict[tuple[str | None, int | None, str], int] = Counter()
        for context in contexts:
            try:
                rendered = engine.render(name, context)
            except TemplateSyntaxError as exc:  # an include that does not parse
                failures[(exc.name or name, exc.lineno, f"{exc.message}")] += 1
                continue
            except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops validation
                where, line = _template_line(exc, engine)
                failures[(where or name, line, f"{type(exc).__name__}: {exc}")] += 1
                continue
            missing.update(rendered.missing)
            fallbacks.update(rendered.fallbacks)
        source = engine.source(name)

        def located(field_name: str) -> tuple[str, int | None]:
            """The field and the first line naming it: in the template, else in a block."""
            line = _first_line_using(source, field_name.split(".")[-1])
            if line is not None:
                return field_name, line
            for other in all_files:
                if other != name:
                    found = _first_line_using(engine.source(other), field_name.split(".")[-1])
                    if found is not None:
                        return f"{field_name} (in {other}:{found})", None
            return field_name, None

        for (where, line, detail), count in sorted(failures.items(), key=str):
            if where != name:  # the failure is inside an included block: point there
                detail, line = f"{where}:{line}: {detail}", None
            report.issues.append(TemplateIssue(name, "render_error", detail, line, count))
        for field_name, count in sorted(missing.items()):
            detail, line = located(field_name)
            report.issues.append(TemplateIssue(name, "missing_field", detail, line, count))
        for field_name, count in sorted(fallbacks.items()):
            detail, line = located(field_name)
            report.issues.append(TemplateIssue(name, "fallback_used", detail, line, count))
    return report


def templates_dir(project: Project, config: PersonalizationConfig) -> Path:
    return project.path(config.templates_dir)
