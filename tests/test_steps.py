"""lakecdp.steps against everything it drives, without Spark.

The registry is the one list of pipeline steps: the pipeline's order, ``lakecdp step``'s
choices, the stage commands of ``lakecdp``, the console scripts in setup.cfg, the files in jobs/,
the bundle's tasks and spark-submit.sh's help all follow it. Names expected here are written out
by hand where they are the project's contract (the five scheduled jobs); everything else is
compared file against registry, both ways ("nothing extra").
"""

from __future__ import annotations

import ast
import configparser
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lakecdp import catalog, cli, entrypoints, steps
from lakecdp.steps import Step

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib" / "lakecdp"

#: jobs/ files that run no single step: the whole pipeline, the demo, the Kafka stream
JOBS_NOT_STEPS = {"run_pipeline.py", "run_demo.py", "stream_events.py"}
#: console scripts that run no single step
SCRIPTS_NOT_STEPS = {
    "lakecdp": "lakecdp.cli:main",
    "lakecdp-pipeline": "lakecdp.entrypoints:pipeline_main",
    "lakecdp-demo": "lakecdp.entrypoints:demo_main",
}


def _console_scripts() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines)


def _bundle_jobs() -> dict[str, dict]:
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    jobs: dict[str, dict] = {}
    for pattern in bundle["include"]:
        for path in sorted(ROOT.glob(pattern)):
            jobs.update(yaml.safe_load(path.read_text())["resources"]["jobs"])
    return jobs


# -- the registry itself -------------------------------------------------------------------
def test_the_registry_as_the_project_knows_it():
    assert [s.name for s in steps.registry()] == [
        "generate",
        "ingest",
        "identity",
        "features",
        "segments",
        "activation",
        "preview",
    ]
    assert [s.name for s in steps.pipeline_steps()] == [
        "ingest",
        "identity",
        "features",
        "segments",
        "activation",
        "preview",
    ]
    assert [s.name for s in steps.demo_steps()] == [s.name for s in steps.registry()]
    assert [s.name for s in steps.scheduled_steps()] == ["ingest", "identity", "features", "segments", "activation"]


def test_every_step_is_well_formed():
    names = [s.name for s in steps.registry()]
    assert len(names) == len(set(names))
    for registered in steps.registry():
        assert registered.name.isidentifier(), registered.name
        assert callable(registered.function()), registered.run
        for table in (*registered.inputs, *registered.outputs):
            assert isinstance(table, catalog.Table) and catalog.table(table.name) is table, (registered.name, table)
        if registered.command is not None:
            assert registered.cli is not None, registered.name
        assert not (registered.demo_only and registered.scheduled), registered.name
    with pytest.raises(ValueError, match="unknown step 'nope'; known: \\['generate'"):
        steps.step("nope")


def test_the_registry_drives_the_pipeline_order(monkeypatch):
    # reorder the registry: the pipeline, the demo and `lakecdp step` follow it, nothing else to edit
    reordered = tuple(reversed(steps.STEPS))
    monkeypatch.setattr(steps, "STEPS", reordered)
    assert [s.name for s in steps.pipeline_steps()] == [
        "preview",
        "activation",
        "segments",
        "features",
        "identity",
        "ingest",
    ]
    assert [s.name for s in steps.demo_steps()][-1] == "generate"
    parser = cli.build_parser()
    args = parser.parse_args(["step", "preview"])
    assert args.step == "preview"


# -- lakecdp CLI ---------------------------------------------------------------------------
def _subcommands(parser) -> dict:
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_lakecdp_step_accepts_exactly_the_registered_steps(capsys):
    commands = _subcommands(cli.build_parser())
    step_action = next(a for a in commands["step"]._actions if a.dest == "step")
    assert list(step_action.choices) == [s.name for s in steps.registry()]
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["step", "nope"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_every_stage_command_that_runs_a_step_goes_through_the_run_ledger():
    commands = _subcommands(cli.build_parser())
    assert cli.command_modules()[0] == "lakecdp.pipeline"
    for registered in steps.registry():
        if registered.cli is not None:
            assert registered.cli in cli.command_modules()
        if registered.command is None:
            continue
        handler = commands[registered.command].get_default("handler")
        # the handler runs the step by pipeline.run_step_command (ops.runs), never the function itself
        assert "run_step_command" in handler.__code__.co_names, (registered.name, handler)
    assert {s.command for s in steps.registry() if s.command} == {"ingest", "identity", "features", "activate"}


# -- console scripts, jobs/, the bundle, spark-submit.sh ----------------------------------
def test_setup_cfg_has_a_console_script_per_scheduled_step_and_nothing_extra():
    expected = dict(SCRIPTS_NOT_STEPS)
    expected.update({f"lakecdp-{s.name}": f"lakecdp.entrypoints:{s.name}_main" for s in steps.scheduled_steps()})
    scripts = _console_scripts()
    assert scripts == expected
    for target in scripts.values():
        module_name, function_name = target.split(":")
        assert callable(getattr(importlib.import_module(module_name), function_name)), target


def test_entry_points_exist_for_scheduled_steps_only():
    assert entrypoints.ingest_main.__name__ == "ingest_main"
    assert getattr(entrypoints, "preview_main", None) is None  # a pipeline step, not a scheduled job
    assert getattr(entrypoints, "generate_main", None) is None
    with pytest.raises(ValueError, match="'preview' is not a scheduled step"):
        entrypoints.step_main("preview")


def _called_job(path: Path) -> str | None:
    """The argument of ``main("<job>")`` in a jobs/ file, if it calls lakecdp.entrypoints.main."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = {
        a.asname or a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "lakecdp.entrypoints"
        for a in n.names
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "main"
            and "main" in imports
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            return node.args[0].value
    return None


def test_jobs_has_a_file_per_scheduled_step_and_nothing_extra():
    files = {p.name for p in (ROOT / "jobs").glob("*.py")}
    assert files == JOBS_NOT_STEPS | {f"run_{s.name}.py" for s in steps.scheduled_steps()}
    for path in (ROOT / "jobs").glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 40, f"{path.name} is over 40 lines"
        if path.name.startswith("run_"):
            assert _called_job(path) == path.stem[len("run_") :], path.name


def test_the_bundle_has_a_task_per_scheduled_step_in_registry_order():
    jobs = _bundle_jobs()
    order = [s.name for s in steps.scheduled_steps()]
    tasks = {task["task_key"]: task for job in jobs.values() for task in job["tasks"]}
    assert set(tasks) == set(order)
    for key, task in tasks.items():
        assert task["python_wheel_task"]["entry_point"] == f"lakecdp-{key}"
    for job in jobs.values():
        keys = [task["task_key"] for task in job["tasks"]]
        assert keys == sorted(keys, key=order.index), keys


def test_spark_submit_help_lists_the_jobs():
    completed = subprocess.run(
        ["bash", str(ROOT / "spark-submit.sh"), "--help"], capture_output=True, text=True, check=True
    )
    listed = completed.stdout.split("a job name:", 1)[1].split("Options:", 1)[0]
    names = {name.strip() for name in listed.replace("\n", " ").split(",")}
    assert names == {"pipeline", "demo"} | {s.name for s in steps.scheduled_steps()}


# -- one bootstrap -------------------------------------------------------------------------
#: modules that call the session factory (lakecdp.spark.get_session) themselves: the bootstrap, and
#: the identity benchmark (it takes the caller's session and builds one only when run on its own)
SESSION_BUILDERS = {"context.py", "identity/benchmark.py"}


def test_commands_and_jobs_start_through_the_one_bootstrap():
    callers = set()
    for path in [*LIB.rglob("*.py"), *(ROOT / "jobs").glob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "get_session":
                callers.add(str(path.relative_to(LIB if path.is_relative_to(LIB) else ROOT)))
    assert callers == SESSION_BUILDERS


# -- a new step is one file plus one registry line ----------------------------------------
def test_a_plugin_step_joins_the_pipeline_the_cli_and_the_demo_with_one_line(monkeypatch):
    sys.path.insert(0, str(Path(__file__).parent))
    from plugin_price_bands import PRICE_BANDS

    monkeypatch.setattr(
        steps,
        "STEPS",
        (
            *steps.STEPS,
            Step(
                "price_bands",
                "plugin_price_bands:run",
                inputs=(catalog.PRODUCTS,),
                outputs=(PRICE_BANDS,),
                scheduled=False,
            ),
        ),
    )
    assert [s.name for s in steps.pipeline_steps()][-2:] == ["preview", "price_bands"]
    assert [s.name for s in steps.demo_steps()][-1] == "price_bands"
    assert cli.build_parser().parse_args(["step", "price_bands"]).step == "price_bands"
    assert steps.step("price_bands").function().__module__ == "plugin_price_bands"
    # not scheduled: the files-against-registry checks above ask nothing more of it
    assert "price_bands" not in {s.name for s in steps.scheduled_steps()}
