"""The sample generator's files, checked independently: Python's csv/json/datetime and pyarrow
parse what it wrote; expected values are the configured rates and the documented formats."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lakecdp.config import ConfigError, load_model
from lakecdp.sample import SampleConfig, generate
from lakecdp.sample.cli import register
from lakecdp.sample.generator import is_generated, request_fingerprint

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)
AS_OF_1 = AS_OF + timedelta(days=7)
PEOPLE = 300
# higher rates than conf/sample.yaml so that 300 people carry every kind of dirt
CONFIG = SampleConfig.model_validate(
    {
        "version": 1,
        "products": 60,
        "dirt": {
            "typo": 0.04,
            "nickname": 0.10,
            "swapped_name": 0.02,
            "missing_field": 0.10,
            "changed_email": 0.08,
            "changed_address": 0.05,
            "email_variant": 0.15,
            "junk_identifier": 0.05,
        },
        "defects": {
            "malformed_line": 0.02,
            "wrong_field_count": 0.02,
            "missing_required": 0.02,
            "invalid_timestamp": 0.02,
            "invalid_type": 0.02,
            "invalid_email": 0.02,
            "invalid_date": 0.02,
            "impossible_date": 0.02,
            "field_too_long": 0.02,
            "bad_encoding": 0.02,
            "duplicate_event": 0.02,
            "late_event": 0.3,
        },
        "increments": {"days": 7, "new_people": 0.05, "crm_changes": 0.2},
    }
)
CRM_FILE, SHOP_FILE = "crm/crm_customers_{n}.csv", "shop_customers/customers_{n}.jsonl"
ORDERS_FILE, WEB_FILE = "shop_orders/orders_{n}.jsonl", "web_events/web_events_{n}.jsonl"
EMAIL_FILE, THIRD_FILE = "email_events/email_events_{n}.csv", "third_party/enrichment_{n}.parquet"
CRM_HEADER = [
    "CustomerID",
    "FirstName",
    "LastName",
    "Email",
    "Phone",
    "DOB",
    "Street",
    "PostCode",
    "Town",
    "Country",
    "EmailOptIn",
    "LastModified",
]
EMAIL_HEADER = ["event_id", "event_type", "email", "campaign_id", "occurred_at", "bounce_type", "url"]
VALID_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
JUNK_EMAILS = {"test@test.com", "noemail@example.com", "none@none.com"}


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """Seed 7 twice (increment 0, then 1 in the first folder and in a folder of its own), and seed
    8 once. The second seed-7 world is generated in this process (``spark=None``, the embedded engine's demo), the first by
    Spark: the determinism test compares the two paths byte for byte. The seed-8 world, which
    only has to differ, is generated in this process too (a Spark generation is a job of Python
    workers: ~10 s on two loaded cores)."""
    root = tmp_path_factory.mktemp("sample")
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        runs[name] = generate(
            spark if name == "a" else None,
            landing=root / name / "landing",
            labels=root / name / "labels",
            people=PEOPLE,
            seed=seed,
            increment=0,
            as_of=AS_OF,
            config=CONFIG,
        )
    # increment 1 by Spark into "a", and in this process into a folder of its own: the files
    # that continue the demo world (erasure, parity) generate their increment in this process
    for name, session, folder in (("a1", spark, "a"), ("b1", None, "b1")):
        runs[name] = generate(
            session,
            landing=root / folder / "landing",
            labels=root / folder / "labels",
            people=PEOPLE,
            seed=7,
            increment=1,
            as_of=AS_OF_1,
            config=CONFIG,
        )
    return root, runs


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def _csv_row(line: bytes) -> list[str]:
    return next(csv.reader([line.decode("utf-8")], strict=True))


def _labels(root: Path, name: str) -> list[dict[str, str]]:
    with open(root / "a" / "labels" / name, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _planted(root: Path, n: int = 0) -> dict[tuple[str, int], dict[str, str]]:
    return {(r["file"], int(r["line"])): r for r in _labels(root, f"planted_{n}.csv")}


def _fails(parse, value) -> bool:
    try:
        parse(value)
    except (ValueError, TypeError, KeyError, csv.Error):
        return True
    return False


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- determinism -----------------------------------------------------------------------------------------
def test_same_seed_writes_identical_bytes_and_another_seed_differs(world):
    root, runs = world
    a0 = {k: v for k, v in _files(root / "a" / "landing").items() if k.endswith(("_0.csv", "_0.jsonl", "_0.parquet"))}
    b0 = _files(root / "b" / "landing")
    assert (
        sorted(a0)
        == sorted(b0)
        == [
            CRM_FILE.format(n=0),
            EMAIL_FILE.format(n=0),
            "products/products_0.csv",
            SHOP_FILE.format(n=0),
            ORDERS_FILE.format(n=0),
            THIRD_FILE.format(n=0),
            WEB_FILE.format(n=0),
        ]
    )
    assert a0 == b0
    for label in ("entities_0.csv", "planted_0.csv", "people_0.csv"):
        assert (root / "a" / "labels" / label).read_bytes() == (root / "b" / "labels" / label).read_bytes()
    c0 = _files(root / "c" / "landing")
    for name in a0:
        assert c0[name] != a0[name], name
    assert runs["a"] == runs["b"]
    # increment 1 too: Spark's (in "a", beside increment 0) and this process's
    a1 = _files(root / "a" / "landing").keys() - a0.keys()
    b1 = _files(root / "b1" / "landing")
    assert sorted(a1) == sorted(b1) and len(b1) >= 5
    assert {name: (root / "a" / "landing" / name).read_bytes() for name in a1} == b1
    for label in ("entities_1.csv", "planted_1.csv", "people_1.csv"):
        assert (root / "a" / "labels" / label).read_bytes() == (root / "b1" / "labels" / label).read_bytes()
    assert runs["a1"] == runs["b1"]


def test_labels_are_outside_landing_and_generate_checks_arguments(spark, tmp_path):
    landing = tmp_path / "landing"
    with pytest.raises(ValueError, match="must not be inside the landing folder"):
        generate(spark, landing=landing, labels=landing / "labels", people=10, seed=1, as_of=AS_OF, config=CONFIG)
    with pytest.raises(ValueError, match="people must be at least 1, got 0"):
        generate(spark, landing=landing, labels=tmp_path / "l", people=0, seed=1, as_of=AS_OF, config=CONFIG)
    with pytest.raises(ValueError, match="as_of must carry a time zone"):
        generate(
            spark, landing=landing, labels=tmp_path / "l", people=5, seed=1, as_of=datetime(2026, 11, 1), config=CONFIG
        )
    assert not landing.exists()


def test_config_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "sample.yaml"
    bad.write_text("version: 1\ndirt:\n  typos: 0.1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sample\.yaml: dirt\.typos: Extra inputs are not permitted"):
        load_model(bad, SampleConfig)
    bad.write_text("version: 1\ndefects:\n  malformed_line: 1.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sample\.yaml: defects\.malformed_line: Input should be less"):
        load_model(bad, SampleConfig)
    repo_conf = Path(__file__).resolve().parents[1] / "conf" / "sample.yaml"
    assert load_model(repo_conf, SampleConfig).coverage.crm == 0.70


# -- ground truth ------------------------------------------------------------------------------------------
def test_every_customer_record_has_a_label_and_every_label_a_record(world):
    root, _ = world
    landing = root / "a" / "landing"
    planted = _planted(root)
    quarantined = {key for key, row in planted.items() if row["expected"] == "quarantine"}
    found: set[tuple[str, str]] = set()
    for number, line in enumerate(_lines(landing / CRM_FILE.format(n=0))[1:], start=2):
        if (CRM_FILE.format(n=0), number) not in quarantined:
            found.add(("crm", _csv_row(line)[0]))
    for number, line in enumerate(_lines(landing / SHOP_FILE.format(n=0)), start=1):
        if (SHOP_FILE.format(n=0), number) not in quarantined:
            found.add(("shop_customers", json.loads(line)["customer_no"]))
    table = pq.read_table(landing / THIRD_FILE.format(n=0)).to_pylist()
    for number, row in enumerate(table, start=1):
        if (THIRD_FILE.format(n=0), number) not in quarantined:
            found.add(("third_party", row["ext_id"]))
    for number, line in enumerate(_lines(landing / WEB_FILE.format(n=0)), start=1):
        if (WEB_FILE.format(n=0), number) not in quarantined:
            event = json.loads(line)
            if event["event_type"] == "login":
                assert set(event["user"]) >= {"email"}
                found.add(("web_events", event["anonymous_id"]))
    entities = _labels(root, "entities_0.csv")
    labelled = {(r["source"], r["source_record_id"]) for r in entities}
    assert labelled == found
    assert len(labelled) == len(entities)
    sources = Counter(r["source"] for r in entities)
    # coverage 70% crm, 60% shop, 30% third party, 50% web login of 300 people (+ duplicate accounts)
    assert 180 <= sources["crm"] <= 250 and 150 <= sources["shop_customers"] <= 215
    assert 60 <= sources["third_party"] <= 120 and 120 <= sources["web_events"] <= 260
    people = {r["person_id"] for r in _labels(root, "people_0.csv")}
    assert {r["person_id"] for r in entities} <= people and len(people) == PEOPLE


def _check_defect(defect: str, source: str, raw: bytes | dict, header: list[str] | None) -> bool:
    """True when ``raw`` (a physical line, or a Parquet row) really carries ``defect``."""
    if source == "third_party":
        row = raw
        if defect == "MISSING_REQUIRED":
            return row["ext_id"] is None
        if defect == "FIELD_TOO_LONG":
            return len(row["full_name"]) > 200
        parsed = (
            None
            if _fails(lambda v: datetime.strptime(v, "%Y%m%d"), row["dob"])
            else datetime.strptime(row["dob"], "%Y%m%d").date()
        )
        return parsed is None if defect == "INVALID_DATE" else (parsed.year <= 1900 or parsed > AS_OF.date())
    if defect == "BAD_ENCODING":
        return _fails(lambda b: b.decode("utf-8"), raw)
    text = raw.decode("utf-8")
    if header is None:  # JSON lines
        if defect == "MALFORMED_LINE":
            return _fails(json.loads, text)
        obj = json.loads(text)
        required = {
            "shop_customers": ("customer_no", "updated_at"),
            "shop_orders": ("order_id", "ordered_at", "total"),
            "web_events": ("event_id", "event_type", "ts"),
        }[source]
        stamp = {"shop_customers": "updated_at", "shop_orders": "ordered_at", "web_events": "ts"}[source]
        if defect == "MISSING_REQUIRED":
            return any(obj.get(field) is None for field in required)
        if defect == "INVALID_TIMESTAMP":
            return _fails(_iso, obj[stamp])
        if defect == "INVALID_TYPE":
            value = obj["total" if source == "shop_orders" else "price"]
            return isinstance(value, str) and _fails(float, value)
        if defect == "INVALID_EMAIL":
            return not VALID_EMAIL.match(obj["email"].strip())
        if defect == "FIELD_TOO_LONG":
            return len(obj["name"]["first"]) > 200
        if defect in ("INVALID_DATE", "IMPOSSIBLE_DATE"):
            if _fails(date.fromisoformat, obj["birth_date"]):
                return defect == "INVALID_DATE"
            birth = date.fromisoformat(obj["birth_date"])
            return defect == "IMPOSSIBLE_DATE" and (birth.year <= 1900 or birth > AS_OF.date())
        raise AssertionError(f"unexpected {defect} in {source}")
    if defect == "MALFORMED_LINE":
        return _fails(lambda t: next(csv.reader([t], strict=True)), text)
    fields = _csv_row(raw)
    if defect == "WRONG_FIELD_COUNT":
        return len(fields) != len(header)
    if len(fields) != len(header):
        return False
    row = dict(zip(header, fields))
    if source == "crm":
        if defect == "MISSING_REQUIRED":
            return row["CustomerID"] == "" or row["LastModified"] == ""
        if defect == "INVALID_TIMESTAMP":
            return _fails(lambda v: datetime.strptime(v, "%Y-%m-%d %H:%M:%S"), row["LastModified"])
        if defect == "INVALID_EMAIL":
            return not VALID_EMAIL.match(row["Email"].strip())
        if defect == "FIELD_TOO_LONG":
            return len(row["FirstName"]) > 200
        if defect in ("INVALID_DATE", "IMPOSSIBLE_DATE"):
            if _fails(lambda v: datetime.strptime(v, "%d/%m/%Y"), row["DOB"]):
                return defect == "INVALID_DATE"
            birth = datetime.strptime(row["DOB"], "%d/%m/%Y").date()
            return defect == "IMPOSSIBLE_DATE" and (birth.year <= 1900 or birth > AS_OF.date())
    if source == "email_events":
        if defect == "MISSING_REQUIRED":
            return "" in (row["event_id"], row["email"], row["occurred_at"])
        if defect == "INVALID_TIMESTAMP":
            return _fails(_iso, row["occurred_at"])
        if defect == "INVALID_EMAIL":
            return not VALID_EMAIL.match(row["email"].strip())
    raise AssertionError(f"unexpected {defect} in {source}")


def test_every_planted_row_really_carries_its_defect_and_clean_rows_parse(world):
    root, _ = world
    landing = root / "a" / "landing"
    planted = _planted(root)
    headers = {"crm": CRM_HEADER, "email_events": EMAIL_HEADER}
    files = {
        "crm": CRM_FILE,
        "shop_customers": SHOP_FILE,
        "shop_orders": ORDERS_FILE,
        "web_events": WEB_FILE,
        "email_events": EMAIL_FILE,
    }
    seen: dict[str, set[str]] = defaultdict(set)
    for source, pattern in files.items():
        name = pattern.format(n=0)
        lines = _lines(landing / name)
        header = headers.get(source)
        if header is not None:
            assert _csv_row(lines[0]) == header
        ids_so_far: set[str] = set()
        for number, raw in enumerate(lines, start=1):
            if header is not None and number == 1:
                continue
            label = planted.get((name, number))
            if label is None:
                # a clean line parses, has every required field and the right shape
                if header is None:
                    obj = json.loads(raw.decode("utf-8"))
                    key = obj.get("event_id") or obj.get("order_id") or obj.get("customer_no")
                else:
                    fields = _csv_row(raw)
                    assert len(fields) == len(header), (name, number)
                    key = fields[0]
                assert key and key not in ids_so_far, (name, number)
                ids_so_far.add(key)
                continue
            seen[source].add(label["defect"])
            if label["defect"] == "DUPLICATE":
                assert label["expected"] == "duplicate"
                assert label["record_key"] in ids_so_far and raw in lines[: number - 1], (name, number)
                continue
            assert _check_defect(label["defect"], source, raw, header), (name, number, label, raw[:200])
            try:
                key = json.loads(raw).get("event_id") if source == "web_events" else None
            except ValueError:
                key = None
            if key:
                ids_so_far.add(key)
    table = pq.read_table(landing / THIRD_FILE.format(n=0)).to_pylist()
    for number, row in enumerate(table, start=1):
        label = planted.get((THIRD_FILE.format(n=0), number))
        if label is not None:
            seen["third_party"].add(label["defect"])
            assert _check_defect(label["defect"], "third_party", row, None), (number, label, row)
    assert {code for codes in seen.values() for code in codes} == {
        "MALFORMED_LINE",
        "WRONG_FIELD_COUNT",
        "MISSING_REQUIRED",
        "INVALID_TIMESTAMP",
        "INVALID_TYPE",
        "INVALID_EMAIL",
        "INVALID_DATE",
        "IMPOSSIBLE_DATE",
        "FIELD_TOO_LONG",
        "BAD_ENCODING",
        "DUPLICATE",
    }
    expected_outcome = {
        ("crm", "INVALID_EMAIL"): "warning",
        ("email_events", "INVALID_EMAIL"): "quarantine",
        ("crm", "INVALID_DATE"): "warning",
        ("crm", "BAD_ENCODING"): "quarantine",
        ("shop_orders", "INVALID_TYPE"): "quarantine",
    }
    for label in planted.values():
        if (label["source"], label["defect"]) in expected_outcome:
            assert label["expected"] == expected_outcome[(label["source"], label["defect"])], label


def test_measured_dirt_rates_match_configured_rates(world):
    root, _ = world
    landing = root / "a" / "landing"
    planted = _planted(root)
    emails, phones = [], []
    crm_lines = _lines(landing / CRM_FILE.format(n=0))
    for number, raw in enumerate(crm_lines[1:], start=2):
        if (CRM_FILE.format(n=0), number) not in planted:
            row = dict(zip(CRM_HEADER, _csv_row(raw)))
            emails.append(row["Email"] or None)
            phones.append(row["Phone"] or None)
    shop_lines = _lines(landing / SHOP_FILE.format(n=0))
    for number, raw in enumerate(shop_lines, start=1):
        if (SHOP_FILE.format(n=0), number) not in planted:
            obj = json.loads(raw)
            emails.append(obj["email"])
            phones.append(obj["phone"])
    assert len(emails) > 300

    def share(predicate, values) -> float:
        return sum(1 for v in values if predicate(v)) / len(values)

    # configured: junk 0.05, case/whitespace variant 0.15, missing 0.10 (one draw: exclusive)
    assert share(lambda e: e in JUNK_EMAILS, emails) == pytest.approx(0.05, abs=0.04)
    assert share(lambda e: e is not None and e not in JUNK_EMAILS and e != e.strip().lower(), emails) == pytest.approx(
        0.15, abs=0.06
    )
    assert share(lambda e: e is None, emails) == pytest.approx(0.10, abs=0.05)
    assert share(lambda p: p is None, phones) == pytest.approx(0.10, abs=0.05)
    assert share(lambda p: p in {"0000000000", "n/a", "00000 000000", "1234567890"}, phones) == pytest.approx(
        0.05, abs=0.04
    )
    # planted defects: crm can carry 9 kinds at 0.02 each, shop customers 6 kinds
    crm_defects = sum(1 for key in planted if key[0] == CRM_FILE.format(n=0))
    assert crm_defects / (len(crm_lines) - 1) == pytest.approx(0.18, abs=0.07)
    shop_defects = sum(1 for key in planted if key[0] == SHOP_FILE.format(n=0))
    assert shop_defects / len(shop_lines) == pytest.approx(0.12, abs=0.07)


def test_households_share_surname_and_address(world):
    root, _ = world
    landing = root / "a" / "landing"
    household_of = {
        r["source_record_id"]: r["household_id"] for r in _labels(root, "entities_0.csv") if r["source"] == "crm"
    }
    person_of = {r["source_record_id"]: r["person_id"] for r in _labels(root, "entities_0.csv") if r["source"] == "crm"}
    planted = _planted(root)
    records = []
    for number, raw in enumerate(_lines(landing / CRM_FILE.format(n=0))[1:], start=2):
        if (CRM_FILE.format(n=0), number) not in planted:
            row = dict(zip(CRM_HEADER, _csv_row(raw)))
            records.append(
                (household_of[row["CustomerID"]], person_of[row["CustomerID"]], (row["LastName"], row["PostCode"]))
            )
    same, same_agree, other, other_agree = 0, 0, 0, 0
    for i, (hh_a, person_a, key_a) in enumerate(records):
        for hh_b, person_b, key_b in records[i + 1 :]:
            if person_a == person_b:
                continue
            if hh_a == hh_b:
                same += 1
                same_agree += key_a == key_b
            else:
                other += 1
                other_agree += key_a == key_b
    assert same >= 40
    # typos (2% on surnames), swapped names (2%) and moves (5%) break some pairs, not most
    assert same_agree / same >= 0.75
    assert other_agree / other < 0.005


def test_planted_behaviours_are_in_the_events(world):
    root, _ = world
    landing = root / "a" / "landing"
    behaviours = {r["person_id"]: r["behaviour"] for r in _labels(root, "people_0.csv") if r["behaviour"]}
    kinds = Counter(b.split(":")[0] for b in behaviours.values())
    assert set(kinds) == {
        "high_spender_recent",
        "cart_abandoner",
        "repeat_browser",
        "churn_risk",
        "unsubscribed",
        "hard_bounced",
    }
    device_person = {
        r["source_record_id"]: r["person_id"] for r in _labels(root, "entities_0.csv") if r["source"] == "web_events"
    }
    planted = _planted(root)
    views: dict[str, Counter] = defaultdict(Counter)
    carts: dict[str, datetime] = {}
    last_seen: dict[str, datetime] = {}
    for number, raw in enumerate(_lines(landing / WEB_FILE.format(n=0)), start=1):
        if (WEB_FILE.format(n=0), number) in planted:
            continue
        event = json.loads(raw)
        person = device_person.get(event["anonymous_id"])
        if person is None:
            continue
        at = _iso(event["ts"])
        last_seen[person] = max(at, last_seen.get(person, at))
        if event["event_type"] == "product_view" and at >= AS_OF - timedelta(hours=48):
            views[person][event["product_id"]] += 1
        if event["event_type"] == "add_to_cart" and at >= AS_OF - timedelta(hours=6):
            carts[person] = at
    # a device whose only login event was quarantined is linked to nobody: check the others
    linked = set(device_person.values())
    checked = Counter(b.split(":")[0] for p, b in behaviours.items() if p in linked)
    assert checked["repeat_browser"] >= 3 and checked["cart_abandoner"] >= 3
    for person, behaviour in behaviours.items():
        if person not in linked:
            continue
        if behaviour.startswith("repeat_browser:"):
            assert views[person][behaviour.split(":")[1]] >= 3, person
        if behaviour == "cart_abandoner":
            assert person in carts, person
        if behaviour == "churn_risk" and person in last_seen:
            assert last_seen[person] < AS_OF - timedelta(days=90), person
    # nobody else added to a cart in the last six hours
    assert {p for p in carts} <= {p for p, b in behaviours.items() if b == "cart_abandoner"}
    mails = [
        dict(zip(EMAIL_HEADER, _csv_row(raw)))
        for number, raw in enumerate(_lines(landing / EMAIL_FILE.format(n=0))[1:], start=2)
        if (EMAIL_FILE.format(n=0), number) not in planted
    ]
    assert {m["event_type"] for m in mails} == {"send", "open", "click", "bounce", "unsubscribe"}
    # background mail never unsubscribes or hard-bounces: every such line (clean or planted) is planted behaviour
    raw_lines = _lines(landing / EMAIL_FILE.format(n=0))
    unsubscribes = {line.split(b",")[0] for line in raw_lines if b",unsubscribe," in line}
    hard_bounces = {line.split(b",")[0] for line in raw_lines if b",bounce," in line and b",hard" in line}
    assert len(unsubscribes) == kinds["unsubscribed"] and len(hard_bounces) == kinds["hard_bounced"]


def test_increment_one_keeps_people_and_changes_crm_records(world):
    root, runs = world
    landing = root / "a" / "landing"
    people_0 = _labels(root, "people_0.csv")
    people_1 = _labels(root, "people_1.csv")
    # 5% of 300 new people; the first 300 keep their ids and households
    assert len(people_1) == 315
    assert [(r["person_id"], r["household_id"]) for r in people_1[:300]] == [
        (r["person_id"], r["household_id"]) for r in people_0
    ]
    assert [r["person_id"] for r in people_1[300:]] == [f"person_{i:07d}" for i in range(300, 315)]
    assert not (landing / "products" / "products_1.csv").exists()

    def crm(n: int) -> dict[str, dict[str, str]]:
        rows = {}
        quarantined = {key for key, r in _planted(root, n).items() if r["expected"] == "quarantine"}
        for number, raw in enumerate(_lines(landing / CRM_FILE.format(n=n))[1:], start=2):
            if (CRM_FILE.format(n=n), number) not in quarantined:
                row = dict(zip(CRM_HEADER, _csv_row(raw)))
                rows[row["CustomerID"]] = row
        return rows

    before, after = crm(0), crm(1)
    delivered_before = {
        m.group(1).decode()
        for m in map(re.compile(rb'^"?(C\d{7}),').match, _lines(landing / CRM_FILE.format(n=0)))
        if m
    }
    changed = set(after) & set(before)
    new_ids = set(after) - delivered_before
    # 20% of the existing CRM records are re-delivered with a change
    assert len(changed) / len(before) == pytest.approx(0.2, abs=0.08)
    for customer_id in changed:
        old, new = before[customer_id], after[customer_id]
        assert new["LastModified"] > old["LastModified"]
        assert new["LastModified"] >= (AS_OF_1 - timedelta(days=7)).strftime("%Y-%m-%d %H:%M:%S")
        assert (new["Email"], new["Street"], new["PostCode"]) != (old["Email"], old["Street"], old["PostCode"])
        assert (new["FirstName"], new["LastName"]) == (old["FirstName"], old["LastName"])
    entity_person = {
        r["source_record_id"]: r["person_id"] for r in _labels(root, "entities_1.csv") if r["source"] == "crm"
    }
    # an existing record looks new only when increment 0 delivered it without its CustomerID
    keyless = sum(1 for r in _planted(root, 0).values() if r["source"] == "crm" and not r["record_key"])
    old_people = {c for c in new_ids if entity_person[c] < "person_0000300"}
    assert len(old_people) <= keyless
    assert len(new_ids - old_people) >= 5
    assert all(entity_person[c] < "person_0000300" for c in changed)
    # web events of increment 1 fall in its 7 days, except late arrivals from the 7 days before
    stamps = [
        _iso(json.loads(raw)["ts"])
        for raw in _lines(landing / WEB_FILE.format(n=1))
        if not _fails(lambda r: _iso(json.loads(r)["ts"]), raw)
    ]
    window = AS_OF_1 - timedelta(days=7)
    late = [t for t in stamps if t < window]
    assert all(AS_OF_1 - timedelta(days=14) <= t <= AS_OF_1 for t in stamps)
    assert 0 < len(late) < len(stamps) / 2
    assert runs["a1"]["shop_customers"] < runs["a"]["shop_customers"]


def test_demo_step_skips_identical_files(world, spark, tmp_path):
    root, runs = world
    labels, landing = root / "b" / "labels", root / "b" / "landing"
    fingerprint = request_fingerprint(people=PEOPLE, seed=7, increment=0, as_of=AS_OF, config=CONFIG)
    assert is_generated(landing=landing, labels=labels, fingerprint=fingerprint) == runs["b"]
    other = request_fingerprint(people=PEOPLE, seed=8, increment=0, as_of=AS_OF, config=CONFIG)
    assert is_generated(landing=landing, labels=labels, fingerprint=other) is None
    # a file changed since: not the same files any more
    web = landing / WEB_FILE.format(n=0)
    web.write_bytes(web.read_bytes() + b"{}\n")
    assert is_generated(landing=landing, labels=labels, fingerprint=fingerprint) is None


def test_cli_parses_generate_options():
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "generate",
            "--people",
            "120",
            "--seed",
            "9",
            "--increment",
            "2",
            "--landing",
            "x/landing",
            "--labels",
            "x/labels",
            "--as-of",
            "2026-11-08T00:00:00",
        ]
    )
    assert (args.people, args.seed, args.increment, args.landing, args.labels) == (120, 9, 2, "x/landing", "x/labels")
    assert args.as_of == datetime(2026, 11, 8, tzinfo=timezone.utc)
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "--people", "0"])


def test_demo_step_writes_once_then_skips(spark, project, tmp_path):
    import shutil

    import yaml

    from lakecdp.context import JobContext
    from lakecdp.sample import job

    # the demo's 5,000 people take too long for a unit test; the step's logic is the same
    conf = tmp_path / "conf"
    shutil.copytree(project.conf_dir, conf)
    sample = yaml.safe_load((conf / "sample.yaml").read_text())
    sample["demo_people"] = 30
    (conf / "sample.yaml").write_text(yaml.safe_dump(sample))
    ctx = JobContext.create(project.model_copy(update={"conf_dir": conf}), spark)
    first = job.run_demo_generate(ctx)
    crm = project.landing / "crm" / "crm_customers_0.csv"
    people = project.warehouse / "labels" / "people_0.csv"
    assert first["people"] == 30 and first["products"] == 200
    assert len(people.read_text(encoding="utf-8").splitlines()) == 31
    written_at = crm.stat().st_mtime_ns
    assert job.run_demo_generate(ctx) == first
    assert crm.stat().st_mtime_ns == written_at


# -- hard shapes for identity (no Spark: the row functions directly) ---------------------------
HARD = SampleConfig.model_validate(
    {
        "version": 1,
        "dirt": {"first_name_typo": 0.10, "postcode_typo": 0.10, "missing_surname": 0.05},
        "missing_fields": {"birth_date": ["shop_customers"], "address": ["third_party"], "contact": ["crm"]},
        "defects": {
            name: 0.0
            for name in (
                "malformed_line",
                "wrong_field_count",
                "missing_required",
                "invalid_timestamp",
                "invalid_type",
                "invalid_email",
                "invalid_date",
                "impossible_date",
                "field_too_long",
                "bad_encoding",
            )
        },
    }
)


def _hard_rows(config: SampleConfig, people: int = 2000):
    from lakecdp.sample.sources import Spec, crm_rows, shop_customer_rows, third_party_rows
    from lakecdp.sample.world import make_person

    spec = Spec(seed=11, config=config, initial=people, increment=0, as_of_ms=int(AS_OF.timestamp() * 1000))
    out = []
    for index in range(people):
        person = make_person(11, index, config, initial=people)
        crm = [dict(zip(CRM_HEADER, _csv_row(r["line"]))) for r in crm_rows(spec, person)]
        shop = [json.loads(r["line"]) for r in shop_customer_rows(spec, person)]
        out.append((person, crm, shop, third_party_rows(spec, person)))
    return out


def _one_edit(a: str, b: str) -> bool:
    """b is a with one character changed or two neighbours swapped (hand-written oracle)."""
    if len(a) != len(b) or a == b:
        return False
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    return len(diff) == 1 or (
        len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    )


def test_hard_shapes_empty_whole_fields_per_source_and_plant_typos_and_missing_surnames():
    rows = _hard_rows(HARD)
    crm = [(p, r) for p, rs, _, _ in rows for r in rs]
    shop = [(p, r) for p, _, rs, _ in rows for r in rs]
    third = [(p, r) for p, _, _, rs in rows for r in rs]
    assert len(crm) > 1000 and len(shop) > 1000 and len(third) > 400
    # whole kinds of field missing in one source, present in the others
    assert all(r["birth_date"] is None for _, r in shop)
    assert all(r["address"] is None and r["postcode"] is None and r["city"] is None for _, r in third)
    assert all(r["Email"] == "" and r["Phone"] == "" for _, r in crm)
    assert sum(r["DOB"] != "" for _, r in crm) / len(crm) > 0.9
    assert sum(r["address"]["zip"] is not None for _, r in shop) == len(shop)
    # postcodes: ~10% one digit or one transposition away from the true one, the rest exact
    codes = [
        (p.home.postcode, r["PostCode"])
        for p, r in crm
        if r["PostCode"] in (p.home.postcode,) or _one_edit(p.home.postcode, r["PostCode"])
    ]
    typos = sum(true != shown for true, shown in codes)
    assert len(codes) >= 0.94 * len(crm)  # the others moved house (changed_address 5%)
    assert 0.07 < typos / len(crm) < 0.13, typos / len(crm)
    # surnames: ~5% of records have none, in every source
    missing = [r["LastName"] == "" for _, r in crm] + [r["name"]["last"] is None for _, r in shop]
    assert 0.03 < sum(missing) / len(missing) < 0.07
    assert any("," not in r["full_name"] and " " not in r["full_name"].strip() for _, r in third)
    # first names: more typos than the default world (typo 4% split between both names)
    changed = sum(r["FirstName"] not in (p.first_name, *p.nicknames, p.last_name) for p, r in crm)
    assert 0.08 < changed / len(crm) < 0.16, changed / len(crm)


def test_default_world_has_no_hard_shapes():
    """The hard shapes are opt-in: the demo world's records are what they were."""
    rows = _hard_rows(SampleConfig.model_validate({"version": 1, "defects": HARD.defects.model_dump()}), people=300)
    crm = [r for _, rs, _, _ in rows for r in rs]
    assert all(r["LastName"] != "" for r in crm)
    assert sum(r["Email"] != "" for r in crm) / len(crm) > 0.8
