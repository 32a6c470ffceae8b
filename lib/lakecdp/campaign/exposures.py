"""Exposure facts: ``gold.campaign_exposures``, one row per (campaign, customer, change).

Activation calls :func:`hold_out_and_expose` once per run with the changes it is about to
deliver. A change a campaign claims (one of its ``destinations``, ``segments`` and
``change_types``) that is not suppressed is an exposure of the customer's variant
(:func:`lakecdp.personalization.variants.assign_variant`), or of the holdout: holdout changes
are taken out of the delivery and written to ``activation.deliveries`` with status
``holdout`` (so they are never pending again), and get their exposure row with ``sent = false``.

Exposures are recorded when the change is assigned, before it is sent (intention to treat: a
send that later fails still counts in its variant, as a holdout customer does in the holdout;
``activation.deliveries`` has what happened to each ``change_id``). The table is merged on
``exposure_key = sha256(campaign \\x1f customer_id \\x1f change_id)`` inserting only, so a re-run,
a retried change or a second destination of the same change adds nothing.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any


from lakecdp import catalog
from lakecdp.campaign import EXPOSURES
from lakecdp.config import ConfigError
from lakecdp.personalization.config import Campaign, PersonalizationConfig, load_personalization
from lakecdp.personalization.variants import HOLDOUT, assign_variant

if TYPE_CHECKING:
    from lakecdp.context import JobContext

logger = logging.getLogger(__name__)

EXPOSURES_SCHEMA = catalog.CAMPAIGN_EXPOSURES.struct()

Row = dict[str, Any]


def exposure_key(campaign_id: str, customer_id: str, change_id: str) -> str:
    """``sha256("<campaign>\\x1f<customer_id>\\x1f<change_id>")`` as hex."""
    return hashlib.sha256(f"{campaign_id}\x1f{customer_id}\x1f{change_id}".encode("utf-8")).hexdigest()


def claimed_by(
    campaigns: Mapping[str, Campaign], *, destination: str, segment_id: str | None, change_type: str | None
) -> str | None:
    """The campaign that sends this (destination, segment, change type), if any.

    Raises:
        ConfigError: two campaigns claim it (a change can be measured in one campaign only).
    """
    found = [
        name
        for name, c in campaigns.items()
        if destination in c.destinations
        and (not c.segments or segment_id in c.segments)
        and change_type in c.change_types
    ]
    if len(found) > 1:
        raise ConfigError(
            f"personalization.yaml: campaigns: {found} all claim destination {destination!r} "
            f"segment {segment_id!r}; a change can belong to one campaign only"
        )
    return found[0] if found else None


def template_sha256(templates_dir: Path, template: str | None) -> str | None:
    """sha256 of the template file's bytes, or None (no template, or the file is missing)."""
    if template is None:
        return None
    path = templates_dir / template
    if not path.is_file():
        logger.warning("campaign template %s not found; exposures carry no template hash", path)
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_revision(root: Path) -> str | None:
    """``git rev-parse HEAD`` of the project folder, or None when it is not a git checkout."""
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    revision = result.stdout.strip()
    return revision if result.returncode == 0 and revision else None


def plan_exposures(
    rows: Sequence[Row],
    campaigns: Mapping[str, Campaign],
    *,
    exposed_at: datetime,
    run_id: str,
    versions: Mapping[str, tuple[str | None, str | None]],
) -> tuple[list[Row], list[Row], list[Row]]:
    """Split activation's pending rows (no Spark).

    Args:
        rows: pending rows (``destination, change_id, segment_id, customer_id, change_type,
            suppression_reason`` ...), one per (destination, change).
        campaigns: campaign id -> config.
        versions: campaign id -> (template sha256, git revision).

    Returns:
        ``(to_deliver, held_out, exposures)``: the rows still to deliver (suppressed ones
        included: activation records them), the holdout rows (not sent), and one exposure row
        per (campaign, customer, change) in this batch.
    """
    to_deliver: list[Row] = []
    held_out: list[Row] = []
    exposures: dict[str, Row] = {}
    for row in rows:
        name = None
        if not row.get("suppression_reason") and row.get("customer_id"):
            name = claimed_by(
                campaigns,
                destination=row["destination"],
                segment_id=row.get("segment_id"),
                change_type=row.get("change_type"),
            )
        if name is None:
            to_deliver.append(row)
            continue
        variant = assign_variant(row["customer_id"], name, campaigns[name])
        is_holdout = variant == HOLDOUT
        (held_out if is_holdout else to_deliver).append(row)
        key = exposure_key(name, row["customer_id"], row["change_id"])
        template_hash, revision = versions.get(name, (None, None))
        exposures.setdefault(
            key,
            {
                "exposure_key": key,
                "campaign_id": name,
                "customer_id": row["customer_id"],
                "change_id": row["change_id"],
                "segment_id": row.get("segment_id"),
                "destination": row["destination"],
                "variant": variant,
                "is_holdout": is_holdout,
                "sent": not is_holdout,
                "template": campaigns[name].template,
                "template_sha256": template_hash,
                "git_revision": revision,
                "exposed_at": exposed_at,
                "run_id": run_id,
            },
        )
    return to_deliver, held_out, list(exposures.values())


def measured_campaigns(config: PersonalizationConfig) -> dict[str, Campaign]:
    """Campaigns that activation sends (they name at least one destination)."""
    return {name: c for name, c in config.campaigns.items() if c.destinations}


def record_exposures(ctx: JobContext, exposures: Sequence[Row]) -> int:
    """Merge exposure rows into ``gold.campaign_exposures``, inserting only new keys."""
    if not exposures:
        return 0
    frame = ctx.spark.createDataFrame(
        [tuple(r[f.name] for f in EXPOSURES_SCHEMA.fields) for r in exposures], EXPOSURES_SCHEMA
    )
    # 'false': a key already there keeps its first variant, time and template version
    ctx.tables.merge(ctx.spark, frame, EXPOSURES, keys=["exposure_key"], update_condition="false")
    return len(exposures)


def hold_out_and_expose(ctx: JobContext, rows: Sequence[Row]) -> list[Row]:
    """Activation's one call: record exposures, hold out the holdout, return the rows to deliver.

    Holdout rows go to ``activation.deliveries`` with status ``holdout`` (never sent, never
    pending again). Exposures are written first, so a crash before the ledger write leaves
    them to the re-run's merge (same keys: nothing added twice).

    Example:
        >>> rows = hold_out_and_expose(ctx, rows)   # in lakecdp.activation.job.run
    """
    from lakecdp.activation import ledger
    from lakecdp.personalization.preview import templates_dir

    config = load_personalization(ctx.project.conf_dir)
    campaigns = measured_campaigns(config)
    if not campaigns or not rows:
        return list(rows)
    folder = templates_dir(ctx.project, config)
    revision = git_revision(ctx.project.root)
    versions = {name: (template_sha256(folder, c.template), revision) for name, c in campaigns.items()}
    to_deliver, held_out, exposures = plan_exposures(
        rows, campaigns, exposed_at=ctx.as_of.astimezone(timezone.utc), run_id=ctx.run_id, versions=versions
    )
    record_exposures(ctx, exposures)
    now = datetime.now(timezone.utc)
    ledger.LedgerWriter(ctx).deliveries(
        ledger.delivery_row(
            r, destination=r["destination"], run_id=ctx.run_id, status="holdout", attempts=0, response_code=None, at=now
        )
        for r in held_out
    )
    logger.info("campaigns: %d exposures recorded, %d holdout changes not sent", len(exposures), len(held_out))
    return to_deliver
