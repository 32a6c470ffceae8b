"""``lakecdp segments ...``: validate, dry-run, explain, approve, stream.

lakecdp segments validate
lakecdp segments dry-run [--segment S ...]
lakecdp segments explain --customer ID --segment S
lakecdp segments approve --segment S [--run RUN_ID]
lakecdp segments stream [--once]
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from lakecdp.config import ConfigError

if TYPE_CHECKING:
    from lakecdp.context import JobContext
    from lakecdp.segments.definitions import SegmentDefinition


def _context(args: argparse.Namespace, command: str) -> JobContext:
    from lakecdp.context import start_job

    return start_job(args.conf, args.env, app_name=f"lakecdp-segments-{command}")


def _segments(args: argparse.Namespace, ctx: JobContext | None = None) -> dict[str, SegmentDefinition]:
    from lakecdp.config import load_project
    from lakecdp.segments.definitions import load_segments

    conf_dir = ctx.project.conf_dir if ctx is not None else load_project(args.conf, env=args.env).conf_dir
    return load_segments(conf_dir / "segments")


def _validate(args: argparse.Namespace) -> int:
    try:
        segments = _segments(args)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    refused = {}
    if not args.syntax_only and any(d.spec.reads_views for d in segments.values()):
        from lakecdp.segments.evaluate import check_segments
        from lakecdp.segments.job import validation_inputs

        ctx = _context(args, "validate")
        refused = check_segments(ctx.spark, segments, validation_inputs(ctx))
    for sid, definition in segments.items():
        if sid in refused:
            print(f"refused  {refused[sid]}", file=sys.stderr)
        else:
            print(f"ok  {sid:<28} {definition.kind:<9} {definition.rule}")
    return 1 if refused else 0


def _selected(segments: dict[str, SegmentDefinition], wanted: list[str] | None) -> dict[str, SegmentDefinition]:
    if not wanted:
        return segments
    unknown = sorted(set(wanted) - set(segments))
    if unknown:
        raise SystemExit(f"unknown segment(s) {unknown}; known: {sorted(segments)}")
    return {sid: d for sid, d in segments.items() if sid in wanted}


def _dry_run(args: argparse.Namespace) -> int:
    from lakecdp.segments.inspect import dry_run, format_dry_run
    from lakecdp.segments.job import load_inputs

    ctx = _context(args, "dry-run")
    segments = _segments(args, ctx)
    report = dry_run(ctx, _selected(segments, args.segment), load_inputs(ctx), sample_size=args.sample)
    print(format_dry_run(report))
    return 0


def _explain(args: argparse.Namespace) -> int:
    from lakecdp.segments.inspect import explain, format_explain
    from lakecdp.segments.job import load_inputs

    ctx = _context(args, "explain")
    segments = _segments(args, ctx)
    if args.segment not in segments:
        print(f"unknown segment {args.segment!r}; known: {sorted(segments)}", file=sys.stderr)
        return 2
    result = explain(ctx, segments, load_inputs(ctx), customer_id=args.customer, segment_id=args.segment)
    print(format_explain(result))
    return 0


def _approve(args: argparse.Namespace) -> int:
    from lakecdp.segments.job import APPROVALS, approve

    ctx = _context(args, "approve")
    if not ctx.tables.exists(ctx.spark, APPROVALS):
        print("nothing to approve: no segments.approvals table yet", file=sys.stderr)
        return 1
    runs = approve(ctx.spark, ctx.tables, segment_id=args.segment, run_id=args.run, approved_by=args.by)
    if not runs:
        print(f"no held changes for segment {args.segment}" + (f" in run {args.run}" if args.run else ""))
        return 1
    print(f"approved {args.segment}: runs {', '.join(runs)}")
    return 0


def _stream(args: argparse.Namespace) -> int:
    from lakecdp.segments.streaming import start_stream

    ctx = _context(args, "stream")
    query = start_stream(ctx, trigger_available_now=args.once, processing_time=args.every)
    query.awaitTermination()
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("segments", help="segment definitions, dry-run, explain, approvals")
    commands = parser.add_subparsers(dest="segments_command", required=True, metavar="segments_command")

    validate = commands.add_parser(
        "validate", help="check every conf/segments/*.yaml, SQL included (on Spark's own plan: starts Spark)"
    )
    validate.add_argument(
        "--syntax-only", action="store_true", help="only the quick checks that need no Spark (not the plan check)"
    )
    validate.set_defaults(handler=_validate)

    dry = commands.add_parser("dry-run", help="sizes, changes, overlaps and samples, nothing written")
    dry.add_argument("--segment", action="append", help="only this segment (repeatable)")
    dry.add_argument("--sample", type=int, default=5, help="sample members per segment (default 5)")
    dry.set_defaults(handler=_dry_run)

    why = commands.add_parser("explain", help="why a customer is in or out of a segment")
    why.add_argument("--customer", required=True, help="customer_id")
    why.add_argument("--segment", required=True, help="segment id")
    why.set_defaults(handler=_explain)

    ok = commands.add_parser("approve", help="release changes held by the size-change guard")
    ok.add_argument("--segment", required=True, help="segment id")
    ok.add_argument("--run", default=None, help="only this run (default: every held run)")
    ok.add_argument("--by", default="cli", help="who approves (recorded)")
    ok.set_defaults(handler=_approve)

    stream = commands.add_parser("stream", help="evaluate event segments continuously from silver.events")
    stream.add_argument("--once", action="store_true", help="process what is there and stop")
    stream.add_argument("--every", default="1 minute", help="micro-batch interval (default 1 minute)")
    stream.set_defaults(handler=_stream)
