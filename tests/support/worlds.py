"""The demo world built once per test run and copied into every test that starts from one.

Running ``lakecdp demo`` on a 300-person world takes minutes; the end-to-end file, the API end to
end, the erasure byte scan and the engine parity tier all start from that same world and then
change it (an increment, an erasure, events posted over HTTP; the parity tier runs the embedded
engine's demo beside it). So the first test to ask builds it, and every test gets its own
copy of the project's data folders (warehouse, landing, checkpoints, models): a copy of ~15 MB
takes about a second. Nothing in those folders holds an absolute path (Delta logs name their
files relative to the table, the ingest audit relative to landing), so a copied world is the world.

Under pytest-xdist each worker is its own process, and with ``--dist loadfile`` the files that want
the world may run on either worker: the build is shared through a folder beside the workers'
temporary folders (``pytest-of-<user>/pytest-<n>/``), under an exclusive file lock, keyed by a hash
of everything the build reads (conf, templates, the number of people), as pytest-xdist documents
for session fixtures. A failed build leaves no world behind (it is built under a temporary name
and renamed when done), so the next test builds it again and fails the same way.

The standalone cluster test runs the same demo (same conf, size, seed and as-of) through
spark-submit: it holds the lock while it runs and publishes its project's folders as the world
once its own checks pass (:func:`publishing_demo_world`), so a full run builds the world once, on
the cluster; ``make test-all`` starts that test first (tests/conftest.py). Run without it, the first
file that asks builds the world in-process with :func:`lakecdp.demo.run_demo`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

#: the demo world's size: enough people for the identity accuracy targets and for a
#: multi-record person who reached the exports (the erasure scan); the API, e2e, erasure and
#: standalone cluster files agree (the cluster's run is the world)
DEMO_PEOPLE = 400

#: what a project keeps beside its data and the tests bring themselves (their own conf)
_NOT_DATA = {"conf", "templates"}


def write_demo_conf(root: Path, *, people: int = DEMO_PEOPLE) -> Path:
    """The repository's conf under ``root/conf`` with the demo sized to ``people``, and the
    templates beside it (paths in conf resolve against the folder holding conf/)."""
    conf = root / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    shutil.copytree(REPO_ROOT / "templates", root / "templates")
    set_demo_people(conf, people)
    return conf


def set_demo_people(conf: Path, people: int) -> None:
    sample = yaml.safe_load((conf / "sample.yaml").read_text())
    sample["demo_people"] = people
    (conf / "sample.yaml").write_text(yaml.safe_dump(sample))


def _inputs_key(people: int, as_of: str) -> str:
    """A hash of everything the demo build reads besides the library itself (one test run has
    one library)."""
    digest = hashlib.sha256(f"{people}|{as_of}".encode())
    for folder in ("conf", "templates"):
        for path in sorted((REPO_ROOT / folder).rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(REPO_ROOT).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every worker of this run sees: the parent of the workers' temporary folders
    under xdist, the run's own temporary folder without it."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-worlds"
    folder.mkdir(exist_ok=True)
    return folder


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(spark, root: Path, *, people: int, as_of: str) -> None:
    from conftest import make_project
    from lakecdp.demo import run_demo

    conf = write_demo_conf(root, people=people)
    project = make_project(root, as_of=as_of).model_copy(update={"conf_dir": conf})
    result = run_demo(project, spark)
    # a fresh folder: the demo ran every step, it did not resume an earlier run
    assert not result.resumed


@contextmanager
def publishing_demo_world(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    people: int = DEMO_PEOPLE,
    as_of: str = "2026-11-01T00:00:00Z",
) -> Iterator[Callable[[Path], None]]:
    """For a test that runs the demo itself (the standalone cluster's spark-submit): hold the
    world's lock for the block and yield ``publish(root)``, which makes the project at ``root``
    (its data folders) the run's demo world, so :func:`copy_demo_world` copies it instead of
    building the same world a second time.

    ``publish`` is called by the test after its own checks passed; when the block fails or never
    publishes, no world is left behind and the next :func:`copy_demo_world` builds it. When the
    world exists already (another file built it first), ``publish`` does nothing. The demo is the
    same either way: the same conf, size, seed and ``as_of`` (``_inputs_key``), whichever Spark
    runs it.
    """
    shared = _shared_folder(tmp_path_factory)
    key = _inputs_key(people, as_of)
    world = shared / key

    def publish(root: Path) -> None:
        if world.exists():
            return
        building = shared / f"{key}.building"
        shutil.rmtree(building, ignore_errors=True)
        _copy_data(root, building)
        building.rename(world)

    if world.exists():
        yield publish
        return
    with _exclusive(shared / f"{key}.lock"):
        yield publish


def _copy_data(source: Path, dest: Path) -> None:
    """The project's data folders and files under ``source`` (not its conf or templates) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name in _NOT_DATA:
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name)
        else:
            shutil.copy2(entry, dest / entry.name)


def copy_demo_world(
    spark,
    tmp_path_factory: pytest.TempPathFactory,
    dest: Path,
    *,
    people: int = DEMO_PEOPLE,
    as_of: str = "2026-11-01T00:00:00Z",
) -> None:
    """Put a fresh copy of the demo world's data (warehouse, landing, checkpoints, models) under
    ``dest``, as if ``lakecdp demo`` had run there with the repository's conf sized to ``people``
    and the test environment of :func:`conftest.make_project` (``as_of``).

    The caller writes its own conf under ``dest`` (for the demo size, :func:`set_demo_people`).
    """
    shared = _shared_folder(tmp_path_factory)
    key = _inputs_key(people, as_of)
    world = shared / key
    with _exclusive(shared / f"{key}.lock"):
        if not world.exists():
            building = shared / f"{key}.building"
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir()
            _build(spark, building, people=people, as_of=as_of)
            building.rename(world)
    _copy_data(world, dest)
