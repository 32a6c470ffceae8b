"""spark-submit.sh --dry-run: the command it would run, without Spark, Maven or a cluster.

``--local-jars`` takes the jars from the folder lakecdp.jvm uses (``$LAKECDP_JVM_DIR`` when set),
so a local session and a submitted job run on the same jars.
"""

from __future__ import annotations

import os
import shlex
import subprocess

from conftest import REPO_ROOT


def _dry_run(*args: str, **env: str) -> list[str]:
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "spark-submit.sh"), "--dry-run", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return shlex.split(done.stdout)


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_local_jars_come_from_lakecdp_jvm_dir_when_it_is_set(tmp_path):
    # a resolved folder as `python -m lakecdp.jvm spark` leaves it: jars and the .resolved marker
    jars = tmp_path / "jvm" / "spark-jars"
    jars.mkdir(parents=True)
    (jars / ".resolved").write_text("ok\n")
    for name in ("delta-spark_4.2_2.13-4.4.0.jar", "delta-storage-4.4.0.jar"):
        (jars / name).write_bytes(b"")
    command = _dry_run("--local-jars", "pipeline", LAKECDP_JVM_DIR=str(tmp_path / "jvm"))
    listed = _option(command, "--jars").split(",")
    assert listed[:2] == [str(jars / "delta-spark_4.2_2.13-4.4.0.jar"), str(jars / "delta-storage-4.4.0.jar")]
    assert len(listed) == 3 and listed[2].endswith(".jar")  # Splink's UDF jar, from the splink package
    assert "--packages" not in command
    assert command[-5:] == [
        str(REPO_ROOT / "jobs" / "run_pipeline.py"),
        "--conf",
        str(REPO_ROOT / "conf"),
        "--env",
        "local",
    ]


def test_without_local_jars_the_packages_are_named():
    command = _dry_run("--master", "spark://127.0.0.1:7077", "identity")
    assert _option(command, "--packages") == (
        "io.delta:delta-spark_4.2_2.13:4.4.0,org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"
    )
    assert command[-2:] == ["--env", "cluster"]
