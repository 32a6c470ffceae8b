"""``lakecdp step segments``, ``lakecdp step activation`` and ``lakecdp identity`` (duckdb backend) on
the embedded engine start no JVM.

Each command runs in a process that cannot start one (JAVA_HOME and the jar folder point
nowhere, no ``java`` on PATH): the steps, their record in ``ops.runs`` and its lineage all go
through DuckDB and delta-rs. Inputs are written with delta-rs; expected rows are written by hand.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import yaml
from deltalake import DeltaTable, write_deltalake

from lakecdp import catalog
from lakecdp.delta_store import arrow_schema

ROOT = Path(__file__).resolve().parents[1]
AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _conf(tmp_path: Path) -> Path:
    """Environment ``t`` (engine embedded, the warehouse under tmp_path), one SQL segment and
    one file destination."""
    conf = tmp_path / "conf"
    for folder in ("environments", "segments", "destinations"):
        (conf / folder).mkdir(parents=True)
    environment = {
        "version": 1,
        "name": "t",
        "engine": "embedded",
        "spark": {"mode": "local", "master": "local[1]"},
        "storage": {"warehouse": str(tmp_path / "warehouse")},
        "landing": str(tmp_path / "landing"),
        "checkpoints": str(tmp_path / "checkpoints"),
        "as_of": "2026-11-01T00:00:00Z",
    }
    (conf / "environments" / "t.yaml").write_text(yaml.safe_dump(environment))
    (conf / "segments" / "big.yaml").write_text(
        yaml.safe_dump({"version": 1, "id": "big", "condition": "total_spent > 500", "schedule": {"every_minutes": 5}})
    )
    (conf / "destinations" / "files.yaml").write_text(
        yaml.safe_dump({"version": 1, "type": "file", "format": "csv", "fields": ["email"]})
    )
    return conf


def _write_inputs(warehouse: Path) -> None:
    profile = [
        {"customer_id": "c1", "email": "ada@example.com", "email_consent": True, "sms_consent": False},
        {"customer_id": "c2", "email": "bob@example.com", "email_consent": True, "sms_consent": False},
    ]
    schema = arrow_schema(catalog.CUSTOMER_PROFILE.ddl)
    write_deltalake(str(warehouse / "gold" / "customer_profile"), pa.Table.from_pylist(profile, schema=schema))
    write_deltalake(
        str(warehouse / "gold" / "customer_features"),
        pa.table({"customer_id": ["c1", "c2"], "total_spent": [900.0, 10.0]}),
    )


def _lakecdp(conf: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``lakecdp --conf conf --env t ARGS`` in a process where no JVM can start: the session
    factory finds no jars (``LAKECDP_JVM_DIR``) and Spark's launcher no ``$JAVA_HOME/bin/java``."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("PYSPARK", "SPARK", "JAVA", "LAKECDP"))
    }
    env.update(
        JAVA_HOME=str(cwd / "no-java"),
        LAKECDP_JVM_DIR=str(cwd / "no-jars"),
        PATH=os.path.dirname(sys.executable) + ":/usr/bin:/bin",
        PYTHONPATH=os.pathsep.join([str(ROOT / "lib"), env.get("PYTHONPATH", "")]),
    )
    completed = subprocess.run(
        [sys.executable, "-m", "lakecdp", "--conf", str(conf), "--env", "t", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed


def _runs(warehouse: Path) -> list[dict]:
    rows = DeltaTable(str(warehouse / "ops" / "runs")).to_pyarrow_table().to_pylist()
    return sorted(rows, key=lambda r: r["started_at"])


def test_segments_and_activation_steps_run_without_a_jvm(tmp_path):
    conf = _conf(tmp_path)
    warehouse = tmp_path / "warehouse"
    _write_inputs(warehouse)

    segments = _lakecdp(conf, "step", "segments", cwd=tmp_path)
    assert "starting the Spark session" not in segments.stderr
    changes = DeltaTable(str(warehouse / "segments" / "changes")).to_pyarrow_table().to_pylist()
    assert [(r["segment_id"], r["customer_id"], r["change_type"], r["reason"]) for r in changes] == [
        ("big", "c1", "entered", '{"rule":"total_spent > 500","values":{"total_spent":900.0}}')
    ]
    changes_version = DeltaTable(str(warehouse / "segments" / "changes")).version()

    _lakecdp(conf, "step", "activation", cwd=tmp_path)
    deliveries = DeltaTable(str(warehouse / "activation" / "deliveries")).to_pyarrow_table().to_pylist()
    assert [(r["destination"], r["segment_id"], r["customer_id"], r["status"]) for r in deliveries] == [
        ("files", "big", "c1", "delivered")
    ]
    (change_id,) = [r["change_id"] for r in changes]
    key = hashlib.sha256(f"files\x1f{change_id}".encode()).hexdigest()
    exported = sorted((warehouse / "exports" / "files").rglob("*.csv"))
    assert [p.read_text(encoding="utf-8").splitlines() for p in exported] == [
        [
            "change_id,idempotency_key,segment_id,customer_id,member_key,change_type,changed_at,email",
            f"{change_id},{key},big,c1,,entered,2026-11-01T00:00:00+00:00,ada@example.com",
        ]
    ]

    runs = _runs(warehouse)
    assert [(r["job"], r["step"], r["status"], dict(r["input_versions"])) for r in runs] == [
        ("segments", "segments", "succeeded", {"gold.customer_profile": 0, "gold.customer_features": 0}),
        ("activation", "activation", "succeeded", {"segments.changes": changes_version, "gold.customer_profile": 0}),
    ]
    assert dict(runs[0]["counts"])["entered"] == 1
    assert dict(runs[1]["counts"])["delivered"] == 1


FIRST = "ada bruno chidi dana emil farah goran hana ivo jana kofi lena mateo nina omar".split()
LAST = ["lovelace", "silva", "okafor", "novak", "berg", "haddad", "petrov", "sato", "kovac", "horak"]


def _write_records(warehouse: Path) -> dict[str, str]:
    """30 people, each with a CRM and a shop record sharing an email (and nothing shared across
    people): record id -> the person it belongs to."""
    rows, person_of = [], {}
    for n in range(30):
        first, last = FIRST[n % len(FIRST)], LAST[n % len(LAST)]
        email = f"{first}.{last}.{n}@example.com"
        for source in ("crm", "shop"):
            record_id = f"{source}:{n}"
            person_of[record_id] = f"p{n}"
            rows.append(
                {
                    "record_id": record_id,
                    "source": source,
                    "source_record_id": str(n),
                    "first_name": first,
                    "last_name": last,
                    "email": email,
                    "date_of_birth": datetime(1950 + n, 1 + n % 12, 1 + n % 28).date(),
                    "postcode": f"{10000 + n * 7}",
                    "country": "DE",
                    "device_ids": [],
                    "warnings": [],
                    "updated_at": AS_OF,
                    "ingested_at": AS_OF,
                }
            )
    schema = arrow_schema(catalog.CUSTOMER_RECORDS.ddl)
    write_deltalake(str(warehouse / "silver" / "customer_records"), pa.Table.from_pylist(rows, schema=schema))
    return person_of


def test_identity_on_the_embedded_engine_runs_without_a_jvm(tmp_path):
    conf = _conf(tmp_path)
    (conf / "identity.yaml").write_text((ROOT / "conf" / "identity.yaml").read_text())
    (conf / "sources").mkdir()
    for source in (ROOT / "conf" / "sources").glob("*.yaml"):
        (conf / "sources" / source.name).write_text(source.read_text())
    warehouse = tmp_path / "warehouse"
    person_of = _write_records(warehouse)

    run = _lakecdp(conf, "identity", "--retrain", cwd=tmp_path)
    assert "starting the Spark session" not in run.stderr
    id_map = DeltaTable(str(warehouse / "identity" / "id_map")).to_pyarrow_table().to_pylist()
    customer_of = {r["record_id"]: r["customer_id"] for r in id_map}
    assert set(customer_of) == set(person_of)
    # the two records of a person share one id; no two people share one
    by_person: dict[str, set[str]] = {}
    for record_id, person in person_of.items():
        by_person.setdefault(person, set()).add(customer_of[record_id])
    assert all(len(ids) == 1 for ids in by_person.values())
    assert len({next(iter(ids)) for ids in by_person.values()}) == 30


def test_preview_step_and_command_run_without_a_jvm(tmp_path):
    """The personalisation contexts come from DuckDB over delta-rs on the embedded engine."""
    conf = _conf(tmp_path)
    (conf / "personalization.yaml").write_text(
        yaml.safe_dump({"version": 1, "templates_dir": str(ROOT / "templates"), "demo_campaign": None})
    )
    warehouse = tmp_path / "warehouse"
    profile = [{"customer_id": "c1", "first_name": "Ada"}, {"customer_id": "c2", "first_name": "Bruno"}]
    write_deltalake(
        str(warehouse / "gold" / "customer_profile"),
        pa.Table.from_pylist(profile, schema=arrow_schema(catalog.CUSTOMER_PROFILE.ddl)),
    )
    features = [{"customer_id": "c2", "recommendations": [{"product_id": "P1", "confidence": 0.9}]}]
    write_deltalake(
        str(warehouse / "gold" / "customer_features"),
        pa.Table.from_pylist(features, schema=arrow_schema(catalog.CUSTOMER_FEATURES.ddl)),
    )
    write_deltalake(
        str(warehouse / "silver" / "products"),
        pa.Table.from_pylist([{"product_id": "P1", "name": "Kettle"}], schema=arrow_schema(catalog.PRODUCTS.ddl)),
    )

    step = _lakecdp(conf, "step", "preview", cwd=tmp_path)
    assert "starting the Spark session" not in step.stderr
    lines = (warehouse / "previews" / "welcome" / "c1.txt").read_text(encoding="utf-8").split("\n")
    assert [line for line in lines if line] == ["Hello Ada,", "Thanks for being with us."]

    command = _lakecdp(conf, "preview", "--template", "welcome.txt", "--customer", "c2", cwd=tmp_path)
    assert command.stdout.splitlines() == [f"c2: {warehouse / 'previews' / 'welcome' / 'c2.txt'}"]
    lines = (warehouse / "previews" / "welcome" / "c2.txt").read_text(encoding="utf-8").split("\n")
    assert [line for line in lines if line] == ["Hello Bruno,", "Thanks for being with us.", "Picked for you: Kettle"]
