"""``lakecdp campaign report --campaign C [--as-of TIME] [--chart PATH]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lakecdp.features.cli import parse_as_of


def _report(args: argparse.Namespace) -> int:
    from lakecdp.campaign.report import run_report, write_chart
    from lakecdp.config import ConfigError, load_project
    from lakecdp.context import JobContext
    from lakecdp.spark import get_session

    project = load_project(args.conf, env=args.env)
    spark = get_session(project, app_name="lakecdp-campaign-report")
    ctx = JobContext.create(project, spark, as_of=args.as_of)
    try:
        analysis, text = run_report(ctx, args.campaign)
    except (ConfigError, LookupError) as exc:
        print(f"campaign report: {exc}", file=sys.stderr)
        return 2
    print(text)
    if args.chart:
        path = write_chart(analysis, project.path(args.chart),
                           title=f"campaign {args.campaign} as of {ctx.as_of.isoformat()}")
        print(f"chart: {path}")
    return 1 if analysis.srm_mismatch and args.fail_on_srm else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("campaign", help="campaign measurement: results per variant vs the holdout")
    commands = parser.add_subparsers(dest="campaign_command", required=True, metavar="command")
    report = commands.add_parser(
        "report", help="exposed, converted, lift vs holdout with CI and p-value; writes gold.campaign_results")
    report.add_argument("--campaign", required=True, help="campaign id in conf/personalization.yaml")
    report.add_argument("--as-of", type=parse_as_of, default=None, metavar="TIME",
                        help="report as of this time (default: the environment's as_of, else now)")
    report.add_argument("--chart", type=Path, default=None, metavar="PATH",
                        help="also write a PNG chart here (needs matplotlib: pip install 'lakecdp[charts]')")
    report.add_argument("--fail-on-srm", action="store_true",
                        help="exit 1 when the sample-ratio check fails (for schedulers)")
    report.set_defaults(handler=_report)
