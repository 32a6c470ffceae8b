"""The pipeline's preview step: ``lakecdp.personalization.job:run`` renders the demo template
for the demo customer into ``<warehouse>/<preview_dir>/``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lakecdp.personalization.config import load_personalization
from lakecdp.personalization.engine import TemplateEngine
from lakecdp.personalization.preview import contexts_for, render_previews, templates_dir

if TYPE_CHECKING:
    from lakecdp.context import JobContext

logger = logging.getLogger(__name__)


def run(ctx: JobContext) -> dict[str, int]:
    """Render ``demo_template`` (and its ``.txt`` twin if present) for ``demo_customer``
    (default: the first customer by id).

    Returns:
        ``{"rendered": n, "missing_fields": m, "fallbacks_used": f}``.
    """
    config = load_personalization(ctx.project.conf_dir)
    engine = TemplateEngine(
        templates_dir(ctx.project, config), budget=config.render_budget.budget(), feedback_url=config.feedback_url
    )
    customers = [config.demo_customer] if config.demo_customer else None
    contexts = contexts_for(ctx, config, customer_ids=customers, limit=1, campaign_id=config.demo_campaign)
    if not contexts:
        logger.info("preview: no customer profile to render")
        return {"rendered": 0}
    names = [config.demo_template]
    twin = config.demo_template.rsplit(".", 1)[0] + ".txt"
    if twin != config.demo_template and twin in engine.template_names():
        names.append(twin)
    counts = {"rendered": 0, "missing_fields": 0, "fallbacks_used": 0}
    for name in names:
        for result in render_previews(engine, name, contexts, output_dir=ctx.project.warehouse / config.preview_dir):
            logger.info(
                "preview: %s for %s -> %s (missing %s, fallbacks %s)",
                name,
                result.customer_id,
                result.path,
                sorted(result.missing),
                sorted(result.fallbacks),
            )
            counts["rendered"] += 1
            counts["missing_fields"] += len(result.missing)
            counts["fallbacks_used"] += len(result.fallbacks)
    return counts
