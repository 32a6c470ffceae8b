"""``lakecdp serve | api-pickup | kafka-follow | api-key | api-openapi``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

logger = logging.getLogger(__name__)


def _serve(args: argparse.Namespace) -> int:
    from lakecdp.api.config import load_api_config
    from lakecdp.api.server import serve
    from lakecdp.config import load_project

    project = load_project(args.conf, env=args.env)
    serve(project, load_api_config(project.conf_dir), host=args.host, port=args.port)
    return 0


def _pickup(args: argparse.Namespace) -> int:
    from lakecdp.api.pickup import run
    from lakecdp.config import load_project
    from lakecdp.context import JobContext, open_session

    project = load_project(args.conf, env=args.env)
    if args.follow:
        from lakecdp.api.follow import follow

        try:
            logger.info("api pickup --follow: %s", follow(project, interval=args.interval))
        except KeyboardInterrupt:
            logger.info("api pickup --follow: stopped")
        return 0
    if project.environment.engine == "embedded" and not project.environment.storage.catalog:
        # the embedded pickup needs no JVM (a source it cannot write opens a session itself)
        while True:
            ctx = JobContext.create(project, None)
            logger.info("api pickup %s: %s", ctx.run_id, run(ctx))
            if args.every is None:
                return 0
            time.sleep(args.every)
    spark = open_session(project, app_name="lakecdp-api-pickup")
    while True:
        ctx = JobContext.create(project, spark)
        logger.info("api pickup %s: %s", ctx.run_id, run(ctx))
        if args.every is None:
            return 0
        time.sleep(args.every)


def _kafka_follow(args: argparse.Namespace) -> int:
    from lakecdp.api.follow import follow
    from lakecdp.config import load_project

    project = load_project(args.conf, env=args.env)
    try:
        totals = follow(project, interval=args.interval, kafka=True, intake_log=args.intake_log, once=args.once)
        logger.info("kafka-follow: %s", totals)
    except KeyboardInterrupt:
        logger.info("kafka-follow: stopped")
    return 0


def _key(args: argparse.Namespace) -> int:
    from lakecdp.api.config import new_key

    key, digest = new_key()
    sys.stdout.write(
        f"key:    {key}\nsha256: {digest}\n"
        "Give the key to the client; put only the sha256 in conf/api.yaml (or in the env var "
        "its sha256_env names).\n"
    )
    return 0


def _openapi(args: argparse.Namespace) -> int:
    from lakecdp.api.openapi import openapi_document
    from lakecdp.api.server import intake_sources
    from lakecdp.config import load_project

    project = load_project(args.conf, env=args.env)
    sys.stdout.write(json.dumps(openapi_document(intake_sources(project)), indent=2, sort_keys=True) + "\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the HTTP API (event intake, segments)")
    parser.add_argument("--host", default=None, help="default: conf/api.yaml host")
    parser.add_argument("--port", type=int, default=None, help="default: conf/api.yaml port (0: any free port)")
    parser.set_defaults(handler=_serve)
    parser = subparsers.add_parser("api-pickup", help="load the API's intake log into silver (exactly once)")
    parser.add_argument("--every", type=float, default=None, metavar="SECONDS", help="repeat until stopped")
    parser.add_argument(
        "--follow",
        action="store_true",
        help="embedded engine: pick up new lines as they arrive and re-evaluate the event segments of "
        "their customers (HTTP event -> segment change in seconds, no JVM); runs until stopped",
    )
    parser.add_argument(
        "--interval", type=float, default=0.2, metavar="SECONDS", help="--follow: how often to look at the log"
    )
    parser.set_defaults(handler=_pickup)
    parser = subparsers.add_parser(
        "kafka-follow",
        help="embedded engine: read the Kafka topics of conf/streaming.yaml into silver exactly once and re-evaluate "
        "the event segments of their customers (Kafka event -> segment change in seconds, no JVM)",
    )
    parser.add_argument(
        "--interval", type=float, default=0.2, metavar="SECONDS", help="longest wait for a message per pass"
    )
    parser.add_argument("--once", action="store_true", help="process what the topics hold, then stop")
    parser.add_argument("--intake-log", action="store_true", help="also follow the HTTP intake log in the same loop")
    parser.set_defaults(handler=_kafka_follow)
    parser = subparsers.add_parser("api-key", help="print a new API key and the sha256 to configure")
    parser.set_defaults(handler=_key)
    parser = subparsers.add_parser("api-openapi", help="print the OpenAPI document (docs/openapi.json)")
    parser.set_defaults(handler=_openapi)
