"""``lakecdp campaign report --campaign C [--as-of TIME] [--chart PATH]`` and
``lakecdp campaign plant-sample --campaign C --warehouse DIR`` (a planted campaign to try the report on)."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from lakecdp.features.cli import parse_as_of


def _project(args: argparse.Namespace):
    from lakecdp.config import load_project

    project = load_project(args.conf, env=args.env)
    if args.warehouse is None:
        return project
    environment = project.environment
    storage = environment.storage.model_copy(update={"warehouse": str(args.warehouse.resolve())})
    return project.model_copy(update={"environment": environment.model_copy(update={"storage": storage})})


def _report(args: argparse.Namespace) -> int:
    from lakecdp.campaign.report import run_report, write_chart
    from lakecdp.config import ConfigError
    from lakecdp.context import start_job

    project = _project(args)
    ctx = start_job(project, app_name="lakecdp-campaign-report", as_of=args.as_of)
    try:
        analysis, text = run_report(ctx, args.campaign)
    except (ConfigError, LookupError) as exc:
        print(f"campaign report: {exc}", file=sys.stderr)
        return 2
    print(text)
    if args.chart:
        path = write_chart(
            analysis, project.path(args.chart), title=f"campaign {args.campaign} as of {ctx.as_of.isoformat()}"
        )
        print(f"chart: {path}")
    return 1 if analysis.srm_mismatch and args.fail_on_srm else 0


def _plant(args: argparse.Namespace) -> int:
    from lakecdp.campaign import EXPOSURES
    from lakecdp.campaign.report import EVENTS, IDENTIFIERS, campaign_config
    from lakecdp.config import ConfigError
    from lakecdp.context import start_job
    from lakecdp.sample.campaigns import plant_campaign, write_planted
    from lakecdp.sample.config import load_sample_config

    project = _project(args)
    try:
        campaign = campaign_config(project.conf_dir, args.campaign)
    except ConfigError as exc:
        print(f"campaign plant-sample: {exc}", file=sys.stderr)
        return 2
    ctx = start_job(project, app_name="lakecdp-campaign-plant")
    taken = [n for n in (EXPOSURES, EVENTS, IDENTIFIERS) if ctx.tables.exists(ctx.spark, n)]
    if taken:
        print(
            f"campaign plant-sample: {project.warehouse} already has {taken}; planted rows go into an "
            "empty scratch warehouse only (--warehouse DIR)",
            file=sys.stderr,
        )
        return 2
    sample = load_sample_config(project.conf_dir)
    exposed_at = args.exposed_at or project.as_of() - timedelta(days=30)
    variants = list(campaign.variants)
    lifted = {} if args.aa else {variants[-1]: args.lifted_rate}
    planted = plant_campaign(
        sample.demo_seed,
        args.people,
        campaign_id=args.campaign,
        campaign=campaign,
        base_rate=args.base_rate,
        subgroup_rates=lifted,
        exposed_at=exposed_at,
        config=sample,
    )
    write_planted(ctx, planted)
    print(
        f"planted campaign {args.campaign} in {project.warehouse}: {len(planted.exposures)} exposures at "
        f"{exposed_at.isoformat()}, {len(planted.events)} events; conversion {args.base_rate:.0%} everywhere"
        + (
            ""
            if args.aa
            else f" except {variants[-1]} in DE ({len(planted.subgroup)} people) at {args.lifted_rate:.0%}"
        )
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("campaign", help="campaign measurement: results per variant vs the holdout")
    commands = parser.add_subparsers(dest="campaign_command", required=True, metavar="command")
    report = commands.add_parser(
        "report", help="exposed, converted, lift vs holdout with CI and p-value; writes gold.campaign_results"
    )
    report.add_argument("--campaign", required=True, help="campaign id in conf/personalization.yaml")
    report.add_argument(
        "--as-of",
        type=parse_as_of,
        default=None,
        metavar="TIME",
        help="report as of this time (default: the environment's as_of, else now)",
    )
    report.add_argument(
        "--chart",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write a PNG chart here (needs matplotlib: pip install 'lakecdp[charts]')",
    )
    report.add_argument(
        "--fail-on-srm", action="store_true", help="exit 1 when the sample-ratio check fails (for schedulers)"
    )
    report.add_argument(
        "--warehouse",
        type=Path,
        default=None,
        metavar="DIR",
        help="read and write this warehouse instead of the environment's",
    )
    report.set_defaults(handler=_report)

    plant = commands.add_parser(
        "plant-sample", help="plant a campaign with a known lift into an empty scratch warehouse"
    )
    plant.add_argument("--campaign", required=True, help="campaign id in conf/personalization.yaml")
    plant.add_argument("--warehouse", type=Path, required=True, metavar="DIR", help="an empty scratch warehouse")
    plant.add_argument("--people", type=int, default=6000, help="people of the sample world (default 6000)")
    plant.add_argument("--base-rate", type=float, default=0.10, help="conversion rate of every arm (default 0.10)")
    plant.add_argument(
        "--lifted-rate", type=float, default=0.45, help="conversion rate of the last variant in Germany (default 0.45)"
    )
    plant.add_argument("--aa", action="store_true", help="no lifted arm: an A/A campaign")
    plant.add_argument(
        "--exposed-at",
        type=parse_as_of,
        default=None,
        metavar="TIME",
        help="exposure time (default: 30 days before the environment's as_of)",
    )
    plant.set_defaults(handler=_plant)
