"""Right to erasure on hand-made CRM files: what the Delta commits say, and a person who comes
back with only their name, birth date and address."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from lakecdp.context import JobContext
from lakecdp.ingest.job import ingest
from conftest import REPO_ROOT

AS_OF = datetime(2026, 11, 1)
CRM_HEADER = "CustomerID,FirstName,LastName,Email,Phone,DOB,Street,PostCode,Town,Country,EmailOptIn,LastModified"
ANN = "C1,Ann,Smith,ann@x.com,07700 900123,02/03/1985,1 High St,SW1A 1AA,London,UK,Y,2026-01-01 10:00:00"
BOB = "C2,Bob,Jones,bob@x.com,,,,,,UK,N,2026-01-01 10:00:00"
# what identifies Ann, as silver holds it and as the CRM wrote it
ANN_VALUES = ("ann@x.com", "+447700900123", "07700 900123", "C1", "crm:C1")


def _write(project, relative: str, lines: list[str]) -> Path:
    path = project.landing / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ctx(spark, project, run_id: str) -> JobContext:
    return JobContext.create(project, spark, as_of=AS_OF, run_id=run_id)


def _with_retention(project, tmp_path: Path, hours: int):
    """The project with a conf copy whose erasure keeps files (and log) for ``hours``."""
    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    privacy = yaml.safe_load((conf / "privacy.yaml").read_text())
    privacy["erasure"]["vacuum_retention_hours"] = hours
    (conf / "privacy.yaml").write_text(yaml.safe_dump(privacy))
    return project.model_copy(update={"conf_dir": conf})


def _commit_infos(table: Path) -> list[dict]:
    infos = []
    for path in sorted((table / "_delta_log").glob("*.json")):
        for line in path.read_text().splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                infos.append(action["commitInfo"])
    return infos


@pytest.mark.slow
def test_erasure_commits_name_columns_never_the_person(spark, project, tmp_path):
    from lakecdp.erasure import erase_person

    # with a week's retention nothing is vacuumed and the log keeps every commit: the erasure's
    # own commits are there to read
    project = _with_retention(project, tmp_path, 168)
    _write(project, "crm/crm_customers_0.csv", [CRM_HEADER, ANN, BOB])
    ingest(_ctx(spark, project, "run-1"), only=["crm"])
    result = erase_person(_ctx(spark, project, "erase-1"), email="ann@x.com")
    assert result.rows_deleted["silver.customer_records"] == 1
    assert result.rows_deleted["bronze.crm"] == 1

    for table in ("bronze/crm", "silver/customer_records"):
        infos = _commit_infos(project.warehouse / table)
        erasures = [i for i in infos if str(i.get("userMetadata", "")).startswith("lakecdp-erasure")]
        # one MERGE that deleted Ann's row, by the hash of its content, then the vacuum
        assert {i["operation"] for i in erasures} <= {"MERGE", "VACUUM START", "VACUUM END"}, table
        assert [i["operationMetrics"]["numTargetRowsDeleted"] for i in erasures if i["operation"] == "MERGE"] == [
            "1"
        ], table
        for info in infos:
            text = json.dumps(info).lower()
            # whole tokens: "c1" inside a transaction id's hex is not Ann
            named = [
                v for v in ANN_VALUES if re.search(r"(?<![a-z0-9])" + re.escape(v.lower()) + r"(?![a-z0-9])", text)
            ]
            assert not named, (table, info["operation"], named)


@pytest.mark.slow
def test_a_person_back_with_only_name_birth_date_and_address_is_refused(spark, project):
    from lakecdp.erasure import erase_person

    _write(project, "crm/crm_customers_0.csv", [CRM_HEADER, ANN, BOB])
    ingest(_ctx(spark, project, "run-1"), only=["crm"])
    erase_person(_ctx(spark, project, "erase-1"), email="ann@x.com")

    # a new CRM record: no email, phone or known id; her name, birth date and postcode written
    # differently. Her namesake born another day, and someone else at her address, are welcome.
    _write(
        project,
        "crm/crm_customers_1.csv",
        [
            CRM_HEADER,
            "C77, ann ,SMITH,,,02/03/1985,1 High Street,sw1a1aa,London,UK,N,2026-02-01 10:00:00",
            "C78,Ann,Smith,,,03/03/1985,1 High St,SW1A 1AA,London,UK,N,2026-02-01 10:00:00",
            "C79,Tom,Smith,,,02/03/1985,1 High St,SW1A 1AA,London,UK,N,2026-02-01 10:00:00",
        ],
    )
    counts = ingest(_ctx(spark, project, "run-2"), only=["crm"])
    assert (counts["rows_read"], counts["rows_loaded"], counts["rows_erased"]) == (3, 2, 1)

    tables = JobContext.create(project, spark, as_of=AS_OF).tables
    assert sorted(r[0] for r in tables.read(spark, "silver.customer_records").select("source_record_id").collect()) == [
        "C2",
        "C78",
        "C79",
    ]
    # refused rows are kept nowhere: not in bronze, not in quarantine
    assert "C77" not in str([r.asDict() for r in tables.read(spark, "bronze.crm").collect()])
    assert not tables.exists(spark, "quarantine.crm")
    quality = tables.read(spark, "ops.data_quality").where("source_file = 'crm/crm_customers_1.csv'")
    assert [(r["reason"], r["rows"]) for r in quality.collect()] == [("ERASED", 1)]
    # only salted hashes were kept: one per identifier value plus one name + birth date + postcode
    erasures = tables.read(spark, "ops.erasures").collect()
    assert sorted(r["identifier_type"] for r in erasures) == [
        "crm_id",
        "email",
        "person_key",
        "phone",
        "record_id",
        "source_record_id",
    ]
    assert "ann" not in str([r.asDict() for r in erasures]).lower()


# -- files outside Delta, without Spark -------------------------------------------------------

ANN_IDS = {"email": {"ann@x.com"}, "phone": {"+447700900123"}, "crm_id": {"C1"}}


def test_a_line_names_the_person_in_any_spelling_of_their_identifiers():
    from lakecdp.erasure import PersonMatcher

    mentions = PersonMatcher(ANN_IDS, [{"last_name": "Smith", "date_of_birth": datetime(1985, 3, 2).date()}])
    for line in [
        "C1,Ann",
        "x, ANN@X.COM ,y",
        "+44 7700 900123",
        "07700-900123",
        "tel:00447700900123",
        "(0)7700 900 123",
        "447700900123",
        # SHA-256 of the email and of the phone, as hashed audiences hold them
        hashlib.sha256(b"ann@x.com").hexdigest(),
        hashlib.sha256(b"+447700900123").hexdigest(),
        "J. Smith born 02/03/1985",
        "smith,1985-03-02",
    ]:
        assert mentions(line), line
    for line in [
        "C10,Zed",
        "C1A",
        "xann@x.com",
        "ann@x.community",
        "07700 900124",
        "177009001234",
        "Smith born 03/03/1985",
        "Jones 1985-03-02",
    ]:
        assert not mentions(line), line


def test_files_are_rewritten_without_the_persons_lines_and_batch_items(tmp_path):
    from lakecdp.erasure import PersonMatcher, _rewrite_lines

    mentions = PersonMatcher(ANN_IDS)
    export = tmp_path / "run-1.csv"
    export.write_bytes(b"email,first_name\r\nbob@x.com,Bob\r\nANN@x.com,Ann\r\nzed@x.com,Zed\r\n")
    assert _rewrite_lines(export, mentions, keep_header=True, as_json=False)
    assert export.read_bytes() == b"email,first_name\r\nbob@x.com,Bob\r\nzed@x.com,Zed\r\n"
    assert not _rewrite_lines(export, mentions, keep_header=True, as_json=False)

    # one webhook request per line, a batch of items each: only Ann's item goes
    log = tmp_path / "run-1.jsonl"
    request = {"path": "/", "body": {"run_id": "r", "items": [{"email": "bob@x.com"}, {"email": "ann@x.com"}]}}
    alone = {"path": "/", "body": {"customer": "C1"}}
    log.write_text(json.dumps(request) + "\n" + json.dumps(alone) + "\n")
    assert _rewrite_lines(log, mentions, keep_header=False, as_json=True)
    assert [json.loads(line) for line in log.read_text().splitlines()] == [
        {"path": "/", "body": {"run_id": "r", "items": [{"email": "bob@x.com"}]}}
    ]


def test_session_settings_hold_for_the_block_only_even_when_it_fails(spark):
    from lakecdp.erasure import COMMIT_METADATA, RETENTION_CHECK, session_settings

    before = spark.conf.get(RETENTION_CHECK, None)
    spark.conf.set(COMMIT_METADATA, "someone else's")
    spark.conf.unset(RETENTION_CHECK)
    try:
        with pytest.raises(RuntimeError, match="vacuum failed"):
            with session_settings(spark, {COMMIT_METADATA: "lakecdp-erasure r1", RETENTION_CHECK: "false"}):
                assert spark.conf.get(COMMIT_METADATA) == "lakecdp-erasure r1"
                assert spark.conf.get(RETENTION_CHECK) == "false"
                raise RuntimeError("vacuum failed")
        assert spark.conf.get(COMMIT_METADATA) == "someone else's"
        assert spark.conf.get(RETENTION_CHECK, None) is None
        # None leaves a setting as it is
        with session_settings(spark, {COMMIT_METADATA: None}):
            assert spark.conf.get(COMMIT_METADATA) == "someone else's"
        assert spark.conf.get(COMMIT_METADATA) == "someone else's"
    finally:
        spark.conf.unset(COMMIT_METADATA)
        if before is not None:
            spark.conf.set(RETENTION_CHECK, before)


@pytest.mark.slow
def test_a_table_is_vacuumed_unless_its_folder_holds_only_current_files(spark, project):
    from lakecdp.erasure import RETENTION_CHECK, _nothing_to_vacuum, session_settings

    ctx = _ctx(spark, project, "erase-1")
    name = "gold.customer_profile"
    folder = Path(ctx.tables.location(name))
    spark.range(3).write.format("delta").save(str(folder))
    # one write: its data files, its log, Hadoop's hidden .crc files: nothing to vacuum
    assert _nothing_to_vacuum(ctx, name)
    # an overwrite leaves the first write's files behind
    spark.range(2).write.format("delta").mode("overwrite").save(str(folder))
    assert not _nothing_to_vacuum(ctx, name)
    # until a VACUUM removed them
    with session_settings(spark, {RETENTION_CHECK: "false"}):
        ctx.tables.delta(spark, name).vacuum(0)
    assert _nothing_to_vacuum(ctx, name)
    # a file the current version does not name (change data, a deletion vector, a stray part)
    (folder / "_change_data").mkdir()
    (folder / "_change_data" / "cdc-00000.snappy.parquet").write_bytes(b"x")
    assert not _nothing_to_vacuum(ctx, name)
