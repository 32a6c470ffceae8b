"""Resolve the JVM artifacts lakecdp needs from Maven Central with Maven.

Spark's own ``--packages`` (Ivy) does not read Maven's settings and is slow to start, so
for local runs the jars are resolved once by ``mvn`` from the poms under ``jvm/`` into
``.jvm/`` at the repository root (ignored by git) and handed to Spark as ``spark.jars``.

    python -m lakecdp.jvm spark    # Delta + Kafka connector jars for local Spark

(The test suite's Kafka broker resolves its own classpath the same way: tests/support/kafka_broker.py.)
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
JVM_DIR = Path(os.environ.get("LAKECDP_JVM_DIR", REPO_ROOT / ".jvm"))
SPARK_JARS_DIR = JVM_DIR / "spark-jars"
_DONE = ".resolved"

# "delta-spark_4.2_2.13-4.4.0.jar" -> "delta-spark_4.2_2.13"
_ARTIFACT_RE = re.compile(r"^(?P<artifact>.+?)-\d[\w.\-]*\.jar$")


class JarsMissingError(RuntimeError):
    """The jars a local session needs have not been fetched."""


def _artifact(jar_name: str) -> str:
    match = _ARTIFACT_RE.match(jar_name)
    return match.group("artifact") if match else jar_name


def _pyspark_jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def copy_dependencies(pom: Path, output: Path) -> None:
    """Resolve ``pom``'s runtime dependencies with Maven into ``output`` (replaced whole)."""
    if shutil.which("mvn") is None:
        raise JarsMissingError("Maven (mvn) is not on PATH; it is needed to fetch the JVM jars")
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    logger.info("resolving %s with Maven", pom)
    subprocess.run(cmd, check=True)
    shutil.rmtree(output, ignore_errors=True)
    tmp.rename(output)


def fetch_spark_jars(*, force: bool = False) -> Path:
    """Resolve Delta and the Kafka connector, keeping only jars pyspark does not ship.

    Jars pyspark already has (hadoop, jackson, parquet, scala ...) are dropped so that only
    one version of each library is on the classpath.

    Returns:
        The folder holding the jars.
    """
    if (SPARK_JARS_DIR / _DONE).exists() and not force:
        return SPARK_JARS_DIR
    copy_dependencies(REPO_ROOT / "jvm" / "spark" / "pom.xml", SPARK_JARS_DIR)
    shipped = {_artifact(p.name) for p in _pyspark_jars_dir().glob("*.jar")}
    for jar in SPARK_JARS_DIR.glob("*.jar"):
        if _artifact(jar.name) in shipped:
            jar.unlink()
    (SPARK_JARS_DIR / _DONE).write_text("ok\n")
    return SPARK_JARS_DIR


def spark_jars() -> list[str]:
    """Jars to pass as ``spark.jars`` in local mode: Delta, Kafka connector, Splink's UDFs."""
    if not (SPARK_JARS_DIR / _DONE).exists():
        raise JarsMissingError(
            f"JVM jars not found in {SPARK_JARS_DIR}; run `make jars` (or `python -m lakecdp.jvm spark`) first"
        )
    from splink.backends.spark import similarity_jar_location

    jars = sorted(str(p) for p in SPARK_JARS_DIR.glob("*.jar"))
    return [*jars, similarity_jar_location()]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = argv if argv is not None else sys.argv[1:]
    targets = args or ["spark"]
    for target in targets:
        if target == "spark":
            print(fetch_spark_jars())
        else:
            print(f"unknown target {target!r}: expected spark", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
