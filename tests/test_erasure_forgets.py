"""Right to erasure forgets everywhere: the real pipeline on a small generated world, one person
erased, then a byte scan of every file of the project (Delta data, logs, checkpoints, CDF,
exports, previews, the demo receiver's log, landing, labels, models); then the pipeline runs on,
in full and with an increment (which keeps everyone's customer id).

The demo world is the end-to-end file's (test_end_to_end.py): its erasure and increment checks
run here, on this erasure and this increment, rather than erasing and incrementing the same world
a second time.

The person's identifiers are gathered independently of the code under test: from the landing
files as delivered (csv / json modules) and the Delta tables read with delta-rs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from lakecdp.context import JobContext
from lakecdp.pipeline import run_pipeline
from conftest import make_project, on_engine
from tests.support.worlds import DEMO_PEOPLE, copy_demo_world, write_demo_conf

# a demo world, an erasure and two pipeline runs: minutes, full suite only
pytestmark = pytest.mark.e2e

# the demo world the end-to-end and API files start from too (one build per test run)
PEOPLE = DEMO_PEOPLE


def _rows(warehouse: Path, table: str) -> list[dict]:
    return DeltaTable(str(warehouse / table)).to_pyarrow_table().to_pylist()


# -- the byte scan -----------------------------------------------------------------------------


def _texts(path: Path) -> list[str]:
    """What a file holds, as text: its raw bytes, and for Parquet its decoded rows (pages are
    compressed, a raw scan would miss them)."""
    data = path.read_bytes()
    texts = [data.decode("latin-1"), data.decode("utf-8", "replace")]
    if path.suffix == ".parquet":
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception:  # noqa: BLE001 - a Parquet file we cannot read is scanned raw only
            rows = []
        texts.extend(json.dumps(row, default=str, ensure_ascii=False) for row in rows)
    return texts


def scan(root: Path, spellings: set[str], combos: list[tuple[str, str, list[str]]]) -> list[str]:
    """``file: what`` for every file under ``root`` holding one of ``spellings`` as a whole token
    (any case) or, in one line, a (first name, last name, birth date in any format) combination."""
    needles = sorted({s.lower() for s in spellings}, key=len, reverse=True)
    # one pass per text for all spellings; the alternation tries each spelling at a position
    # before moving on, so it finds a whole-token match exactly when one of them has one
    token = re.compile(r"(?<![a-z0-9])(?:" + "|".join(map(re.escape, needles)) + r")(?![a-z0-9])")
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        # the file's name too: previews are named by customer id
        for text in [path.relative_to(root).as_posix().replace(".", " "), *_texts(path)]:
            lowered = text.lower()
            # a whole token is a substring first: the plain substring test rules most texts out
            match = token.search(lowered) if any(n in lowered for n in needles) else None
            hit = match.group(0) if match else None
            if hit is None:
                for line in lowered.splitlines():
                    hit = next(
                        (
                            f"{first} {last} {born}"
                            for first, last, dates in combos
                            if first in line and last in line
                            for born in dates
                            if born in line
                        ),
                        None,
                    )
                    if hit:
                        break
            if hit:
                found.append(f"{path.relative_to(root)}: {hit}")
                break
    return found


def _date_spellings(born) -> list[str]:
    return [born.strftime(f) for f in ("%Y-%m-%d", "%d/%m/%Y", "%Y%m%d")]


# -- the world -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """The demo world (built once per test run, copied here); the erasure fixture renders a
    preview for the person to be erased."""
    root = tmp_path_factory.mktemp("erasure")
    copy_demo_world(spark, tmp_path_factory, root, people=PEOPLE)
    conf = write_demo_conf(root, people=PEOPLE)
    # the engine one machine runs (conf/environments/local.yaml); the world itself is Spark's
    return on_engine(make_project(root), "embedded").model_copy(update={"conf_dir": conf})


def _the_person(project) -> dict:
    """A person with several records, an email, a phone and a CRM record with name, birth date
    and postcode, who reached as many files outside Delta as possible."""
    warehouse = project.warehouse
    records = _rows(warehouse, "silver/customer_records")
    id_map = {r["record_id"]: r["customer_id"] for r in _rows(warehouse, "identity/id_map")}
    outside = "".join(
        p.read_text(errors="replace").lower()
        for folder in ("exports", "demo_receiver")
        for p in (warehouse / folder).rglob("*")
        if p.is_file()
    )
    per_customer = Counter(id_map[r["record_id"]] for r in records if r["record_id"] in id_map)

    def score(customer_id):
        person = [r for r in records if id_map.get(r["record_id"]) == customer_id]
        crm = [
            r
            for r in person
            if r["source"] == "crm" and r["date_of_birth"] and r["postcode"] and r["first_name"] and r["last_name"]
        ]
        emails = {r["email"] for r in person if r["email"]}
        if not crm or not emails or not any(r["phone"] for r in person):
            return -1
        hashed = {hashlib.sha256(e.encode()).hexdigest() for e in emails}
        return sum(e in outside for e in emails | hashed)

    customer_id = max((c for c, n in per_customer.items() if n >= 2), key=lambda c: (score(c), c))
    assert score(customer_id) >= 1, "no multi-record person reached an export: world too small"
    person = [r for r in records if id_map.get(r["record_id"]) == customer_id]
    return {"customer_id": customer_id, "records": person, "email": next(r["email"] for r in person if r["email"])}


def _spellings(project, person: dict) -> tuple[set[str], list[tuple[str, str, list[str]]]]:
    """Every spelling of the person's identifiers, from silver (delta-rs) and the landing files
    as the sources delivered them."""
    records = person["records"]
    values = {person["customer_id"]}
    for record in records:
        values |= {record["record_id"], record["source_record_id"]}
        values |= {record[c] for c in ("email", "phone", "crm_id", "customer_number") if record[c]}
        values |= set(record["device_ids"] or [])
    for record in records:
        if record["email"]:
            values.add(hashlib.sha256(record["email"].encode()).hexdigest())
        if record["phone"]:
            values |= {
                record["phone"].lstrip("+"),
                hashlib.sha256(record["phone"].encode()).hexdigest(),
                hashlib.sha256(record["phone"].lstrip("+").encode()).hexdigest(),
            }
    # the phone and email as the CRM and the shop wrote them
    crm_ids = {r["source_record_id"] for r in records if r["source"] == "crm"}
    shop_ids = {r["source_record_id"] for r in records if r["source"] == "shop_customers"}
    for path in (project.landing / "crm").glob("*.csv"):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row["CustomerID"] in crm_ids:
                    values |= {v.strip() for v in (row["Email"], row["Phone"]) if v and v.strip()}
    for path in (project.landing / "shop_customers").glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("customer_no") in shop_ids:
                values |= {str(row[k]).strip() for k in ("email", "phone") if row.get(k)}
    combos = [
        (r["first_name"].lower(), r["last_name"].lower(), _date_spellings(r["date_of_birth"]))
        for r in records
        if r["first_name"] and r["last_name"] and r["date_of_birth"]
    ]
    # short values (a 1-character name) would match anywhere; every identifier here is longer
    return {v for v in values if len(v) >= 4}, combos


@pytest.fixture(scope="module")
def erased(spark, world):
    """The person, their spellings, and the project scanned before and after ``erase_person``."""
    from lakecdp.erasure import erase_person
    from lakecdp.personalization.config import load_personalization
    from lakecdp.personalization.engine import TemplateEngine
    from lakecdp.personalization.preview import contexts_for, render_previews, templates_dir

    person = _the_person(world)
    spellings, combos = _spellings(world, person)
    # `lakecdp preview --customer <id>` on the world's engine (embedded: DuckDB over delta-rs, the
    # same contexts as Spark's, tests/test_personalization_engines.py): a file named by their customer id
    ctx = JobContext.create(world, spark)
    config = load_personalization(world.conf_dir)
    contexts = contexts_for(ctx, config, customer_ids=[person["customer_id"]])
    assert [c["customer_id"] for c in contexts] == [person["customer_id"]]
    render_previews(
        TemplateEngine(templates_dir(world, config)),
        config.demo_template,
        contexts,
        output_dir=world.warehouse / "previews",
    )
    before = scan(world.root, spellings, combos)
    result = erase_person(JobContext.create(world, spark, run_id="erase-1"), email=person["email"].upper())
    after = scan(world.root, spellings, combos)
    return {
        "person": person,
        "spellings": spellings,
        "combos": combos,
        "before": before,
        "after": after,
        "result": result,
        "rows_mentioning": _parquet_rows_mentioning(world.warehouse, person),
        "erasures": _rows(world.warehouse, "ops/erasures"),
    }


def _parquet_rows_mentioning(warehouse: Path, person: dict) -> list[str]:
    """The Parquet files under the warehouse (current versions and history left after VACUUM;
    not landing or labels) with a row holding one of the person's identifiers as a whole value."""
    records = person["records"]
    values = {
        person["customer_id"],
        *(r["record_id"] for r in records),
        *(r["email"] for r in records if r["email"]),
        *(r["phone"] for r in records if r["phone"]),
        *(r["source_record_id"] for r in records),
    }

    def mentions(value) -> bool:
        text = json.dumps(value, default=str).lower()
        return any(f'"{v.lower()}"' in text for v in values)

    offenders = []
    for file in warehouse.rglob("*.parquet"):
        if "landing" in file.parts or "labels" in file.parts:
            continue
        if any(mentions(row) for row in pq.read_table(file).to_pylist()):
            offenders.append(str(file))
    return offenders


def test_erasure_removes_the_person_from_every_current_file(erased):
    # (the end-to-end file's erasure check, on this erasure of the same demo world)
    assert erased["person"]["customer_id"] in erased["result"].customer_ids
    # every Parquet file left on disk in the warehouse is read back: no row names them
    assert erased["rows_mentioning"] == []
    email = erased["person"]["email"]
    assert erased["erasures"] and all(email not in json.dumps(r, default=str) for r in erased["erasures"])


def test_the_person_was_in_delta_logs_exports_previews_and_landing(erased):
    places = {line.split("/")[0] for line in erased["before"]}
    assert {"warehouse", "landing"} <= places
    where = " ".join(erased["before"])
    for part in ("_delta_log", "exports/", "previews/", "landing/crm/"):
        assert part in where, part


def test_no_file_of_the_project_holds_the_person_after_erasure(erased):
    retained = {f"warehouse/{r['path']}" for r in erased["result"].files.as_dict()["retained"]}
    left = [line for line in erased["after"] if line.split(":")[0] not in retained]
    assert left == []


def test_the_erasure_report_lists_what_it_did_and_names_nobody(erased, world):
    report_path = world.warehouse / "erasure_reports" / "erase-1.json"
    report = json.loads(report_path.read_text())
    assert report["customers"] == 1
    assert report["rows_deleted"]["silver.customer_records"] == len(erased["person"]["records"])
    files = report["files"]
    assert any(p.startswith("exports/") for p in files["rewritten"])
    assert any(p.startswith("landing/crm/") for p in files["rewritten"])
    # the demo receiver's log only when their segments went to the webhook
    assert any(p.startswith("demo_receiver/") for p in files["rewritten"]) == (
        "demo_receiver/" in " ".join(erased["before"])
    )
    # the preview is named by the customer id: deleted, and counted without its name
    assert files["deleted_unnamed"] >= 1
    assert files["retained"] == []
    assert scan(report_path.parent, erased["spellings"], erased["combos"]) == []


def test_pipeline_runs_after_the_erasure_full_then_incremental(spark, world, erased):
    from lakecdp.sample.config import load_sample_config
    from lakecdp.sample.generator import generate

    # the next run: identity cannot read the feed the erasure vacuumed and runs in full
    result = run_pipeline(world, spark, job="pipeline")
    assert result.steps["identity"]["incremental"] == 0
    assert result.steps["identity"]["feed_unreadable"] == 1
    # the rewritten landing files were not loaded again
    assert result.steps["ingest"]["files_loaded"] == 0

    # a later delivery of the same world: identity continues incrementally
    config = load_sample_config(world.conf_dir)
    # in this process: the same bytes as Spark's generation (test_sample_generator)
    generate(
        None,
        landing=world.landing,
        labels=world.warehouse / "labels",
        people=PEOPLE,
        seed=config.demo_seed,
        increment=1,
        as_of=world.as_of(),
        config=config,
    )
    before = {r["record_id"]: r["customer_id"] for r in _rows(world.warehouse, "identity/id_map")}
    result = run_pipeline(world, spark, job="pipeline")
    assert result.steps["identity"]["incremental"] == 1
    # an increment keeps customer ids: every existing person keeps theirs, unless identity
    # recorded a merge of it, and every record of before still maps to a customer
    after = {r["record_id"]: r["customer_id"] for r in _rows(world.warehouse, "identity/id_map")}
    merged_away = {
        r["old_customer_id"] for r in _rows(world.warehouse, "identity/id_changes") if r["change_type"] == "merge"
    }
    assert set(before.values()) - set(after.values()) <= merged_away
    assert set(before) <= set(after)
    assert len(after) > len(before)
    # the person did not come back into any table (the new delivery's landing files are the
    # source's and may name them; ingest refused those rows)
    assert scan(world.warehouse, erased["spellings"], erased["combos"]) == []
