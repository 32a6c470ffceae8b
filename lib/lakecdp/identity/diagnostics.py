"""Splink diagnostic charts of the trained model, saved as HTML files.

- ``match_weights.html``: the weight of every comparison level (and the prior);
- ``m_u_parameters.html``: m and u of every level;
- ``waterfall_<left>__<right>.html``: how one pair's match weight adds up.

Example:
    >>> save_diagnostic_charts(matcher, records, Path("reports/identity"), pair=("crm:1", "shop:7"))
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakecdp.identity.matching import ProbabilisticMatcher
from lakecdp.identity.prepare import prepare_for_matching

logger = logging.getLogger(__name__)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def save_diagnostic_charts(
    matcher: ProbabilisticMatcher,
    records: DataFrame,
    out_dir: Path,
    *,
    pair: tuple[str, str] | None = None,
) -> list[Path]:
    """Write the model's charts (and a waterfall for ``pair``) as self-contained HTML.

    Args:
        matcher: a matcher with a saved model (the newest is used).
        records: ``silver.customer_records`` rows; only the pair's two are read, plus
            term frequencies over all of them.
        out_dir: folder for the HTML files (created).
        pair: two record ids to explain, or None.

    Returns:
        The files written.
    """
    from splink import Linker

    model = matcher.load()
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare_for_matching(records, matcher.config)
    settings = matcher.settings_for(matcher.config.backend, model)
    settings["retain_intermediate_calculation_columns"] = True
    settings["retain_matching_columns"] = True
    from lakecdp.identity.backends import backend_for
    from lakecdp.identity.frequencies import register_term_frequencies
    from lakecdp.identity.model_store import names_path

    backend = backend_for(matcher.config, matcher.spark)
    registered = backend.register(prepared, "charts")
    linker = Linker(registered, settings)
    written = []
    for name, chart in (
        ("match_weights", linker.visualisations.match_weights_chart()),
        ("m_u_parameters", linker.visualisations.m_u_parameters_chart()),
    ):
        path = out_dir / f"{name}.html"
        # altair's Chart.save carries no annotations
        chart.save(str(path), inline=True)  # type: ignore[no-untyped-call]
        written.append(path)
    if pair is not None:
        left, right = pair
        rows = {r["record_id"]: r.asDict() for r in prepared.where(F.col("record_id").isin(left, right)).collect()}
        missing = [rid for rid in pair if rid not in rows]
        if missing:
            raise KeyError(f"records not found: {missing}")
        saved = names_path(model.path)
        shares = json.loads(saved.read_text()) if saved.is_file() else None
        register_term_frequencies(linker, registered, matcher.config, shares)
        scored = linker.inference.score_pair(rows[left], rows[right]).as_record_list()
        path = out_dir / f"waterfall_{_safe(left)}__{_safe(right)}.html"
        linker.visualisations.waterfall_chart(scored).save(str(path), inline=True)  # type: ignore[no-untyped-call]
        written.append(path)
    logger.info("identity charts written: %s", ", ".join(str(p) for p in written))
    return written
