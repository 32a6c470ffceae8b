"""The Databricks-style bundle is well formed and every task runs a real console script."""

from __future__ import annotations

import configparser
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lakecdp.steps import pipeline_steps, scheduled_steps

ROOT = Path(__file__).resolve().parents[1]


def _console_scripts() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines)


def _jobs() -> dict[str, dict]:
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    jobs: dict[str, dict] = {}
    for pattern in bundle["include"]:
        for path in sorted(ROOT.glob(pattern)):
            jobs.update(yaml.safe_load(path.read_text())["resources"]["jobs"])
    return jobs


# Quartz: seconds minutes hours day-of-month month day-of-week [year]
_QUARTZ_FIELD = re.compile(r"^(\*|\?|\d+(-\d+)?(/\d+)?|\d+(,\d+)+|\*/\d+|[A-Z]{3}(-[A-Z]{3})?)$")


def _valid_quartz(expression: str) -> bool:
    fields = expression.split()
    return len(fields) in (6, 7) and all(_QUARTZ_FIELD.match(f) for f in fields)


@pytest.mark.parametrize(
    ("expression", "valid"),
    [("0 0 2 * * ?", True), ("0 0/5 * * * ?", True), ("*/5 * * * *", False), ("0 0 2 * * ? x y", False)],
)
def test_quartz_validator(expression, valid):
    assert _valid_quartz(expression) is valid


def test_bundle_has_the_two_scheduled_jobs():
    jobs = _jobs()
    assert set(jobs) == {"lakecdp_nightly", "lakecdp_cart_abandoners"}
    assert jobs["lakecdp_nightly"]["schedule"]["quartz_cron_expression"] == "0 0 2 * * ?"
    assert jobs["lakecdp_cart_abandoners"]["schedule"]["quartz_cron_expression"] == "0 0/5 * * * ?"
    for job in jobs.values():
        assert _valid_quartz(job["schedule"]["quartz_cron_expression"])


def test_every_task_calls_an_existing_console_script_of_a_pipeline_step():
    scripts = _console_scripts()
    step_names = {s.name for s in scheduled_steps()}
    for job_name, job in _jobs().items():
        keys = [task["task_key"] for task in job["tasks"]]
        assert len(keys) == len(set(keys)), f"{job_name}: duplicate task keys"
        for task in job["tasks"]:
            wheel = task["python_wheel_task"]
            assert wheel["package_name"] == "lakecdp"
            entry_point = wheel["entry_point"]
            assert entry_point in scripts, f"{job_name}.{task['task_key']}: {entry_point} not in setup.cfg"
            module_name, function_name = scripts[entry_point].split(":")
            assert callable(getattr(importlib.import_module(module_name), function_name))
            # task key, console script and pipeline step name agree
            assert entry_point == f"lakecdp-{task['task_key']}"
            assert task["task_key"] in step_names, f"{task['task_key']} is not a scheduled step of lakecdp.steps"
            assert wheel["parameters"] == ["--conf", "${var.conf_dir}", "--env", "${var.env}"]


def test_task_dependencies_follow_the_pipeline_order():
    order = [s.name for s in pipeline_steps()]
    for job_name, job in _jobs().items():
        keys = {task["task_key"] for task in job["tasks"]}
        for task in job["tasks"]:
            for dependency in task.get("depends_on", []):
                upstream = dependency["task_key"]
                assert upstream in keys, f"{job_name}: {task['task_key']} depends on missing {upstream}"
                assert order.index(upstream) < order.index(task["task_key"])
    nightly = [task["task_key"] for task in _jobs()["lakecdp_nightly"]["tasks"]]
    assert nightly == ["ingest", "identity", "features", "segments", "activation"]
    # the nightly job is every scheduled step, in the registry's order
    assert nightly == [s.name for s in scheduled_steps()]


def test_every_scheduled_step_has_a_bundle_task_and_nothing_else_does():
    keys = {task["task_key"] for job in _jobs().values() for task in job["tasks"]}
    assert keys == {s.name for s in scheduled_steps()}


def test_console_scripts_are_installed_and_answer_help():
    bin_dir = Path(sys.executable).parent
    for script in ("lakecdp-ingest", "lakecdp-identity", "lakecdp-segments", "lakecdp-activation"):
        completed = subprocess.run([str(bin_dir / script), "--help"], capture_output=True, text=True)
        assert completed.returncode == 0, completed.stderr
        assert "--conf" in completed.stdout and "--env" in completed.stdout
