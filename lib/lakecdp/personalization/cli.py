"""``lakecdp preview`` and ``lakecdp validate-templates``."""

from __future__ import annotations

import argparse
import sys


def _job(args: argparse.Namespace, name: str):
    """The command's context; its Spark session starts only if the engine is Spark."""
    from lakecdp.context import start_job

    return start_job(args.conf, args.env, app_name=f"lakecdp-{name}")


def _preview(args: argparse.Namespace) -> int:
    from lakecdp.personalization.config import load_personalization
    from lakecdp.personalization.engine import TemplateEngine
    from lakecdp.personalization.preview import contexts_for, render_previews, templates_dir

    if not args.customer and not args.segment:
        print("preview: give --customer ID (repeatable) or --segment S", file=sys.stderr)
        return 2
    ctx = _job(args, "preview")
    project = ctx.project
    config = load_personalization(project.conf_dir)
    engine = TemplateEngine(
        templates_dir(project, config),
        strict=args.strict,
        budget=config.render_budget.budget(),
        feedback_url=config.feedback_url,
    )
    if args.template not in engine.template_names():
        print(f"preview: no template {args.template!r}; have {engine.template_names()}", file=sys.stderr)
        return 2
    contexts = contexts_for(
        ctx,
        config,
        customer_ids=args.customer,
        segment=args.segment,
        limit=args.limit,
        campaign_id=args.campaign,
    )
    if not contexts:
        print("preview: no matching customer profile", file=sys.stderr)
        return 1
    output = project.path(args.output) if args.output else project.warehouse / config.preview_dir
    for result in render_previews(engine, args.template, contexts, output_dir=output):
        notes = []
        if result.variant:
            notes.append(f"variant={result.variant}")
        if result.missing:
            notes.append(f"missing={sorted(result.missing)}")
        if result.fallbacks:
            notes.append(f"fallbacks={sorted(result.fallbacks)}")
        print(f"{result.customer_id}: {result.path} {' '.join(notes)}".rstrip())
    return 0


def _validate(args: argparse.Namespace) -> int:
    from lakecdp.personalization.config import load_personalization
    from lakecdp.personalization.engine import TemplateEngine
    from lakecdp.personalization.preview import contexts_for, templates_dir, validate_templates

    ctx = _job(args, "validate-templates")
    project = ctx.project
    config = load_personalization(project.conf_dir)
    engine = TemplateEngine(
        templates_dir(project, config), budget=config.render_budget.budget(), feedback_url=config.feedback_url
    )
    contexts = contexts_for(ctx, config, limit=args.sample or config.validation_sample, campaign_id=args.campaign)
    report = validate_templates(engine, contexts)
    print(f"validated {len(report.templates)} templates against {report.samples} profiles")
    for issue in report.issues:
        print(("ERROR " if issue.is_error else "WARN  ") + str(issue))
    failing = not report.ok or (args.strict and report.issues)
    return 1 if failing else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    preview = subparsers.add_parser("preview", help="render a template for customers into files")
    preview.add_argument("--template", required=True, help="template name under templates/, e.g. welcome.html")
    preview.add_argument("--customer", action="append", help="customer id (repeatable)")
    preview.add_argument("--segment", help="render for current members of this segment")
    preview.add_argument("--limit", type=int, default=10, help="at most this many customers (default 10)")
    preview.add_argument("--campaign", default=None, help="campaign id for A/B variant and holdout")
    preview.add_argument("--output", default=None, help="folder (default <warehouse>/previews)")
    preview.add_argument("--strict", action="store_true", help="fail on a missing field")
    preview.set_defaults(handler=_preview)

    validate = subparsers.add_parser(
        "validate-templates", help="check templates' syntax and render them against real profiles"
    )
    validate.add_argument("--sample", type=int, default=None, help="profiles to render against")
    validate.add_argument("--campaign", default=None, help="campaign id for variant-dependent blocks")
    validate.add_argument("--strict", action="store_true", help="missing fields and fallbacks also fail")
    validate.set_defaults(handler=_validate)
