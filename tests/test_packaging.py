"""The wheel a Databricks job installs holds the library and nothing else: no test or benchmark
support (the Kafka broker, the standalone cluster, the fault-injecting HTTP server).

The wheel is built for real (``pip wheel``, offline: setuptools and wheel come with the test
extra) from a copy of the checkout that keeps ``tests/`` and ``bench/`` beside ``lib/``, so a
package search reaching past ``lib/`` would pick them up. Expected contents come from the file
system of the checkout, not from the build configuration under test.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import PurePosixPath

import pytest

from conftest import REPO_ROOT

# building the wheel for real takes a pip run over a copy of the checkout: full suite only (the
# wheel changes with setup.cfg and the package layout, not with the code a commit usually touches)
pytestmark = pytest.mark.slow

# the modules that moved out of the package into tests/support (issue 15)
MOVED_OUT = ("lakecdp/kafka_broker.py", "lakecdp/standalone.py", "lakecdp/activation/testing.py")
TEST_ONLY_IMPORTS = {"tests", "pytest", "conftest", "kafka_fixtures", "api_server", "bench"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", ".pytest_cache")
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for folder in ("lib", "tests", "bench"):
        shutil.copytree(REPO_ROOT / folder, source / folder, ignore=ignore)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "-q",
            "-w",
            str(root / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = list((root / "dist").glob("lakecdp-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as archive:
        yield archive


def _modules(wheel: zipfile.ZipFile) -> set[str]:
    return {n for n in wheel.namelist() if n.endswith(".py")}


def test_the_wheel_holds_the_lakecdp_package_only(wheel):
    tops = {PurePosixPath(n).parts[0] for n in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"lakecdp"}
    assert not any(name.startswith(("tests/", "bench/", "support/")) for name in wheel.namelist())


def test_no_test_support_module_is_in_the_wheel(wheel):
    modules = _modules(wheel)
    assert [m for m in MOVED_OUT if m in modules] == []
    # whatever their folder: nothing named like the test support modules
    support = {p.name for p in (REPO_ROOT / "tests" / "support").glob("*.py") if p.name != "__init__.py"}
    assert support == {
        "kafka_broker.py",
        "standalone.py",
        "fault_server.py",
        "worlds.py",
        "warehouses.py",
        "examples.py",
    }
    assert [m for m in modules if PurePosixPath(m).name in support | {"testing.py", "conftest.py"}] == []


def test_every_library_module_is_in_the_wheel(wheel):
    checkout = {
        "lakecdp/" + p.relative_to(REPO_ROOT / "lib" / "lakecdp").as_posix()
        for p in (REPO_ROOT / "lib" / "lakecdp").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert _modules(wheel) == checkout
    # the package says it is typed, and the demo's receiver (a user feature) ships
    assert {"lakecdp/py.typed", "lakecdp/activation/receiver.py"} <= set(wheel.namelist())


def test_no_module_in_the_wheel_imports_test_code(wheel):
    offenders = []
    for name in sorted(_modules(wheel)):
        tree = ast.parse(wheel.read(name), filename=name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            offenders += [f"{name}:{node.lineno} imports {r}" for r in roots if r in TEST_ONLY_IMPORTS]
    assert offenders == []
