"""Where a Spark run's time goes, from its event log: jobs, stages, tasks and executor CPU per
job group (bench.ingest_scale sets one per step), and per call site (the line of lakecdp that
started the job).

    PYTHONPATH=$PWD/lib:$PWD .venv/bin/python -m bench.spark_event_log <eventlog folder or file> [--top 15]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class _Job:
    group: str
    call_site: str
    started_ms: int
    ended_ms: int = 0
    stages: list[int] = field(default_factory=list)


@dataclass
class _Stage:
    tasks: int = 0
    cpu_ns: int = 0
    run_ms: int = 0


def _lines(log: Path) -> list[str]:
    """The events of one log: a file, or a rolling log's folder (``eventlog_v2_*``: its
    ``events_<n>_*`` files in order)."""
    if log.is_file():
        return log.read_text(encoding="utf-8").splitlines()
    parts = sorted((p for p in log.iterdir() if p.name.startswith("events_")), key=lambda p: int(p.name.split("_")[1]))
    return [line for part in parts for line in part.read_text(encoding="utf-8").splitlines()]


def summarise(log: Path) -> dict[str, dict]:
    """Per job group: jobs, stages, tasks, wall seconds inside jobs, executor CPU and run seconds,
    and the same per call site."""
    jobs: dict[int, _Job] = {}
    stages: dict[int, _Stage] = defaultdict(_Stage)
    for line in _lines(log):
        event = json.loads(line)
        kind = event["Event"]
        if kind == "SparkListenerJobStart":
            props = event.get("Properties") or {}
            jobs[event["Job ID"]] = _Job(
                props.get("spark.jobGroup.id") or "-",
                props.get("callSite.short") or "?",
                event["Submission Time"],
                stages=list(event.get("Stage IDs") or []),
            )
        elif kind == "SparkListenerJobEnd":
            jobs[event["Job ID"]].ended_ms = event["Completion Time"]
        elif kind == "SparkListenerTaskEnd":
            metrics = event.get("Task Metrics") or {}
            stage = stages[event["Stage ID"]]
            stage.tasks += 1
            stage.cpu_ns += metrics.get("Executor CPU Time", 0)
            stage.run_ms += metrics.get("Executor Run Time", 0)
    out: dict[str, dict] = {}
    for job in jobs.values():
        group = out.setdefault(
            job.group, {"jobs": 0, "stages": 0, "tasks": 0, "job_s": 0.0, "cpu_s": 0.0, "run_s": 0.0, "sites": {}}
        )
        site = group["sites"].setdefault(job.call_site, {"jobs": 0, "tasks": 0, "job_s": 0.0, "cpu_s": 0.0})
        ran = [stages[s] for s in job.stages if s in stages and stages[s].tasks]
        for bucket in (group, site):
            bucket["jobs"] += 1
            bucket["tasks"] += sum(s.tasks for s in ran)
            bucket["job_s"] += max(job.ended_ms - job.started_ms, 0) / 1000
            bucket["cpu_s"] += sum(s.cpu_ns for s in ran) / 1e9
        group["stages"] += len(ran)
        group["run_s"] += sum(s.run_ms for s in ran) / 1000
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    if args.log.name.startswith("eventlog_v2_") or args.log.is_file():
        logs = [args.log]
    else:
        logs = sorted(args.log.iterdir())
    for log in logs:
        groups = summarise(log)
        steps: dict[str, dict] = {}
        for group, g in groups.items():
            step = steps.setdefault(
                group.split("|")[0], {"jobs": 0, "stages": 0, "tasks": 0, "job_s": 0.0, "cpu_s": 0.0}
            )
            for key in step:
                step[key] += g[key]
        for step, g in steps.items():
            print(
                f"STEP {step}: {g['jobs']} jobs, {g['stages']} stages, {g['tasks']} tasks; jobs' wall "
                f"{g['job_s']:.1f} s, executor CPU {g['cpu_s']:.1f} s"
            )
        for group, g in groups.items():
            print(
                f"{group}: {g['jobs']} jobs, {g['stages']} stages, {g['tasks']} tasks; jobs' wall {g['job_s']:.1f} s, "
                f"task run {g['run_s']:.1f} s, executor CPU {g['cpu_s']:.1f} s"
            )
            sites = sorted(g["sites"].items(), key=lambda kv: -kv[1]["job_s"])
            for site, v in sites[: args.top]:
                print(
                    f"    {v['job_s']:7.1f} s wall {v['cpu_s']:7.1f} s CPU {v['jobs']:4} jobs {v['tasks']:5} tasks  {site}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
