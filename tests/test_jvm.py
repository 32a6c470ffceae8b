"""lakecdp.jvm without a source checkout: where an installed wheel keeps the jars, what it
resolves and how it says they are missing. No Spark, no Maven."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

from conftest import REPO_ROOT

_PROBE = """
import lakecdp.jvm as jvm
print(jvm.checkout_root())
print(jvm.JVM_DIR)
try:
    jvm.spark_jars()
except jvm.JarsMissingError as exc:
    print(exc)
"""


def _installed_copy(tmp_path):
    """lakecdp copied as pip installs a wheel: site-packages/lakecdp, no setup.cfg or lib/ around it."""
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    shutil.copytree(REPO_ROOT / "lib" / "lakecdp", site / "lakecdp", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _probe(site, **env) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("LAKECDP_JVM_DIR", "XDG_CACHE_HOME", "PYTHONPATH")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**clean, "PYTHONPATH": str(site), **env},
        cwd=site,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()


def test_an_installed_wheel_keeps_the_jars_in_the_user_cache_and_says_how_to_get_them(tmp_path):
    site = _installed_copy(tmp_path)
    cache = tmp_path / "cache"
    root, jvm_dir, message = _probe(site, XDG_CACHE_HOME=str(cache), HOME=str(tmp_path / "home"))
    assert root == "None"
    assert jvm_dir == str(cache / "lakecdp" / "jvm")
    assert message.startswith(f"JVM jars not found in {cache}/lakecdp/jvm/spark-jars (the default folder/spark-jars")
    assert "`python -m lakecdp.jvm spark`" in message and "set LAKECDP_JVM_DIR" in message


def test_an_installed_wheel_without_xdg_cache_home_uses_dot_cache(tmp_path):
    site = _installed_copy(tmp_path)
    _, jvm_dir, _ = _probe(site, HOME=str(tmp_path / "home"))
    assert jvm_dir == str(tmp_path / "home" / ".cache" / "lakecdp" / "jvm")


def test_lakecdp_jvm_dir_wins_and_the_error_names_it(tmp_path):
    site = _installed_copy(tmp_path)
    chosen = tmp_path / "jars"
    _, jvm_dir, message = _probe(site, LAKECDP_JVM_DIR=str(chosen), HOME=str(tmp_path / "home"))
    assert jvm_dir == str(chosen)
    assert f"JVM jars not found in {chosen}/spark-jars ($LAKECDP_JVM_DIR/spark-jars" in message


def test_a_source_checkout_keeps_them_in_dot_jvm():
    from lakecdp import jvm

    assert jvm.checkout_root() == REPO_ROOT
    if not os.environ.get("LAKECDP_JVM_DIR"):
        assert jvm.JVM_DIR == REPO_ROOT / ".jvm"


def test_the_pom_asks_maven_for_delta_and_the_kafka_connector():
    from lakecdp import jvm

    project = ET.fromstring(jvm.pom_xml("lakecdp-spark-jars", jvm.SPARK_ARTIFACTS))
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    assert project.findtext("m:packaging", namespaces=ns) == "pom"
    found = [
        tuple(d.findtext(f"m:{part}", namespaces=ns) for part in ("groupId", "artifactId", "version"))
        for d in project.findall("m:dependencies/m:dependency", ns)
    ]
    # the versions spark-submit.sh's --packages and setup.cfg's pins name (written out here)
    assert found == [
        ("io.delta", "delta-spark_4.2_2.13", "4.4.0"),
        ("org.apache.spark", "spark-sql-kafka-0-10_2.13", "4.2.0"),
    ]
