"""Where Spark's executor task threads spend their CPU, from a JDK Flight Recorder recording:
execution samples of the ``Executor task launch worker`` threads by known cost (JSON parsing,
interpreted higher-order functions, code generation in tasks, Parquet, Delta statistics...),
their hottest methods, and -- given the run's Spark event log -- by job group
(``bench.ingest_scale`` names one per step, source and phase).

Record with a JVM option on the session (local mode: the driver is the executor), e.g.::

    python -m bench.ingest_scale --engines spark --spark-fraction 0.1 --work /tmp/sis --keep \\
        --spark-conf "spark.driver.extraJavaOptions=-XX:StartFlightRecording=filename=/tmp/x.jfr,settings=profile,dumponexit=true"
    PYTHONPATH=$PWD/lib:$PWD .venv/bin/python -m bench.jfr_tasks /tmp/x.jfr [--event-log <folder>] [--top 25]

``jfr`` (JDK 17+; a newer JDK's reads older recordings) is taken from ``$JFR``, else from PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

from bench.spark_event_log import _lines

#: a cost -> a frame that marks it (a substring of ``Class.method``), counted once per sample
COSTS = {
    "from_json (JsonToStructs)": "JsonToStructs.nullSafeEval",
    "  one InputStreamReader (8 KiB buffer) per parse": "StreamDecoder.forInputStreamReader",
    "higher-order functions, interpreted (filter, transform, map_filter...)": "SimpleHigherOrderFunction.eval",
    "code generation in tasks (projections made per task)": "CodeGeneratorWithInterpretedFallback.createObject",
    "  CodeFormatter.stripExtraNewLinesAndComments (a regex over the generated code)": "stripExtraNewLinesAndComments",
    "Parquet writing": "ParquetWriteSupport.write",
    "Delta's per-file statistics": "DeltaTaskStatisticsTracker",
    "from_csv (CsvToStructs)": "CsvToStructs",
    "Python UDFs (Arrow)": "EvalPythonEvaluatorFactory",
    "SHA-256": "MessageDigest",
    "shuffle write (the stage before a shuffle)": "ShuffleWriteProcessor.write",
}

_TASK_THREAD = "Executor task launch"


def _jfr() -> str:
    found = os.environ.get("JFR") or shutil.which("jfr")
    if not found:
        raise SystemExit("no jfr tool: set JFR to a JDK's bin/jfr")
    return found


def task_samples(recording: Path) -> list[tuple[float, list[str]]]:
    """(epoch seconds, frames innermost first as ``Class.method``) of each task-thread sample."""
    printed = subprocess.run(
        [_jfr(), "print", "--json", "--stack-depth", "200", "--events", "jdk.ExecutionSample", str(recording)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    samples = []
    for event in json.loads(printed)["recording"]["events"]:
        values = event["values"]
        if not (values["sampledThread"].get("javaName") or "").startswith(_TASK_THREAD):
            continue
        frames = [
            # generated classes and lambdas get a new name per query: one name for all of them
            re.sub(
                r"GeneratedClass\$\w+",
                "GeneratedClass$X",
                re.sub(r"\$\$Lambda.*", "$$Lambda", f["method"]["type"]["name"]),
            ).rsplit("/", 1)[-1]
            + "."
            + f["method"]["name"]
            for f in (values.get("stackTrace") or {}).get("frames", [])
        ]
        moment = datetime.fromisoformat(values["startTime"][:26].rstrip("Z") + "+00:00").timestamp()
        samples.append((moment, frames))
    return samples


def job_groups(event_log: Path) -> list[tuple[float, float, str]]:
    """(start, end, job group) of every job of the event log, in epoch seconds."""
    jobs: dict[int, list] = {}
    for line in _lines(event_log):
        event = json.loads(line)
        if event["Event"] == "SparkListenerJobStart":
            group = (event.get("Properties") or {}).get("spark.jobGroup.id", "-")
            jobs[event["Job ID"]] = [event["Submission Time"] / 1000, None, group]
        elif event["Event"] == "SparkListenerJobEnd" and event["Job ID"] in jobs:
            jobs[event["Job ID"]][1] = event["Completion Time"] / 1000
    return sorted((start, end, group) for start, end, group in jobs.values() if end is not None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording", type=Path)
    parser.add_argument("--event-log", type=Path, help="the run's Spark event log (file or eventlog_v2_* folder)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)

    samples = task_samples(args.recording)
    total = len(samples) or 1
    print(f"{len(samples)} executor task-thread samples\n\nby cost (a sample counts for every cost on its stack):")
    for label, marker in COSTS.items():
        count = sum(1 for _, frames in samples if any(marker in f for f in frames))
        print(f"  {count:6d} {100 * count / total:5.1f} %  {label}")
    print("\nhottest methods (self):")
    for method, count in Counter(frames[0] for _, frames in samples if frames).most_common(args.top):
        print(f"  {count:6d} {100 * count / total:5.1f} %  {method}")
    if args.event_log:
        spans = job_groups(args.event_log)
        groups: Counter[str] = Counter()
        for moment, _frames in samples:
            # the latest job started before the sample and not ended (jobs rarely overlap here)
            active = [group for start, end, group in spans if start <= moment <= end]
            groups[active[-1] if active else "(no job)"] += 1
        print("\nby job group:")
        for group, count in groups.most_common(args.top):
            print(f"  {count:6d} {100 * count / total:5.1f} %  {group}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
