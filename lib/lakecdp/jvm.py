"""Resolve the JVM artifacts lakecdp needs from Maven Central with Maven.

Spark's own ``--packages`` (Ivy) does not read Maven's settings and is slow to start, so
for local runs the jars (:data:`SPARK_ARTIFACTS`) are resolved once by ``mvn`` from a pom
written next to them and handed to Spark as ``spark.jars``; a source checkout is not needed.

    python -m lakecdp.jvm spark    # Delta + Kafka connector jars for local Spark

Where they live (:data:`JVM_DIR`): ``$LAKECDP_JVM_DIR`` when set; else ``.jvm/`` at the root of
the source checkout this module runs from (ignored by git); else, installed from a wheel, the
user's cache (``$XDG_CACHE_HOME/lakecdp/jvm``, default ``~/.cache/lakecdp/jvm``).

(The test suite's Kafka broker resolves its own classpath the same way: tests/support/kafka_broker.py.)
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

JVM_DIR_ENV = "LAKECDP_JVM_DIR"
#: what local Spark needs beside pyspark's own jars (spark-submit.sh's --packages names the same);
#: Maven Central serves delta-spark_4.2_2.13 at 4.4.0 only (4.4.1 is a Python-only release)
SPARK_ARTIFACTS = (
    "io.delta:delta-spark_4.2_2.13:4.4.0",
    "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0",
)


def checkout_root() -> Path | None:
    """The source checkout this module runs from (``<root>/lib/lakecdp/jvm.py`` beside
    ``<root>/setup.cfg``), or None when lakecdp is installed from a wheel."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "setup.cfg").is_file() and (root / "lib" / "lakecdp").is_dir() else None


def default_jvm_dir() -> Path:
    """``$LAKECDP_JVM_DIR``; else ``<checkout>/.jvm``; else the user's cache (see the module doc)."""
    if os.environ.get(JVM_DIR_ENV):
        return Path(os.environ[JVM_DIR_ENV])
    root = checkout_root()
    if root is not None:
        return root / ".jvm"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "lakecdp" / "jvm"


JVM_DIR = default_jvm_dir()
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


def pom_xml(name: str, artifacts: Sequence[str]) -> str:
    """A Maven pom whose runtime dependencies are ``artifacts`` (``group:artifact:version``)."""
    dependencies = []
    for coordinate in artifacts:
        group, artifact, version = coordinate.split(":")
        dependencies.append(
            f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version></dependency>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<!-- written by lakecdp.jvm: the jars it resolves with Maven -->\n"
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        f"  <groupId>io.lakecdp</groupId><artifactId>{name}</artifactId><version>0.1.0</version>\n"
        "  <packaging>pom</packaging>\n"
        "  <dependencies>\n" + "\n".join(dependencies) + "\n  </dependencies>\n</project>\n"
    )


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
    JVM_DIR.mkdir(parents=True, exist_ok=True)
    pom = JVM_DIR / "spark-jars.pom.xml"
    pom.write_text(pom_xml("lakecdp-spark-jars", SPARK_ARTIFACTS), encoding="utf-8")
    copy_dependencies(pom, SPARK_JARS_DIR)
    shipped = {_artifact(p.name) for p in _pyspark_jars_dir().glob("*.jar")}
    for jar in SPARK_JARS_DIR.glob("*.jar"):
        if _artifact(jar.name) in shipped:
            jar.unlink()
    (SPARK_JARS_DIR / _DONE).write_text("ok\n")
    return SPARK_JARS_DIR


def spark_jars() -> list[str]:
    """Jars to pass as ``spark.jars`` in local mode: Delta, Kafka connector, Splink's UDFs."""
    if not (SPARK_JARS_DIR / _DONE).exists():
        where = f"${JVM_DIR_ENV}" if os.environ.get(JVM_DIR_ENV) else "the default folder"
        raise JarsMissingError(
            f"JVM jars not found in {SPARK_JARS_DIR} ({where}/spark-jars, no {_DONE} marker); run "
            f"`python -m lakecdp.jvm spark` (needs Maven; `make jars` in a checkout) first, or set {JVM_DIR_ENV} "
            "to a folder whose spark-jars/ holds them"
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
