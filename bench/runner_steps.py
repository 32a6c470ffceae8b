"""Wall time of step commands on a demo warehouse, for two source trees side by side.

Times ``lakecdp step segments``, ``lakecdp step activation`` and ``lakecdp identity`` as the
scheduler runs them (one process each, JVM start included) on copies of a warehouse ``lakecdp
demo`` filled, once with each tree's ``lib`` (say the revision before a change and after).
Each tree works on its own copy (conf, templates, models and warehouse copied from the project
folder); the commands alternate between the trees so both see the same load. The demo's inputs
are unchanged since its run, so each step finds little to do: what is measured is what a
scheduled run costs beside its work (session, run ledger, lineage, input checks).

    PYTHONPATH=lib:. .venv/bin/python -m bench.runner_steps --base . \\
        --tree old=/tmp/lakecdp-old/lib --tree new=lib

Prints one line per command and tree (wall seconds; CPU seconds of the command's process and the
processes it waited for, the JVM included when it was reaped; exit code; whether a Spark session
started) and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "segments": ["step", "segments"],
    "activation": ["step", "activation"],
    "identity": ["identity"],
}
#: logged by lakecdp.spark.get_session when a session is ready
SESSION_STARTED = "session ready"


def prepare(base: Path, root: Path) -> None:
    """``root``: a copy of the project folder's conf, templates, models and warehouse."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for folder in ("conf", "templates", "models", "warehouse"):
        if (base / folder).exists():
            shutil.copytree(base / folder, root / folder, symlinks=True)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(lib: Path, root: Path, args: list[str]) -> tuple[float, float, int, bool]:
    """(wall s, CPU s, exit code, whether a Spark session started) of ``lakecdp ARGS`` in ``root``."""
    env = dict(os.environ, PYTHONPATH=str(lib.resolve()))
    cpu = _children_cpu()
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "lakecdp", "--conf", str(root / "conf"), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr[-3000:])
    return seconds, _children_cpu() - cpu, completed.returncode, SESSION_STARTED in completed.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="a project folder whose warehouse the demo filled")
    parser.add_argument("--tree", action="append", required=True, help="LABEL=PATH of a lib/ folder (two or more)")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/lakecdp-runner-steps"))
    parser.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated, run in this order")
    args = parser.parse_args()
    trees = dict(item.split("=", 1) for item in args.tree)
    for label in trees:
        prepare(args.base, args.scratch / label)
    print(f"load average before: {os.getloadavg()}", flush=True)
    totals = {label: [0.0, 0.0] for label in trees}
    for command in args.commands.split(","):
        for label, lib in trees.items():
            seconds, cpu, code, session = run(Path(lib), args.scratch / label, COMMANDS[command])
            totals[label][0] += seconds
            totals[label][1] += cpu
            print(
                f"{command:<11} {label:<6} {seconds:7.1f} s wall {cpu:7.1f} s CPU  exit {code}  "
                f"spark session: {'yes' if session else 'no'}",
                flush=True,
            )
    for label, (seconds, cpu) in totals.items():
        print(f"total       {label:<6} {seconds:7.1f} s wall {cpu:7.1f} s CPU")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
