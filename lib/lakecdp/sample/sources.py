"""Raw source rows of one person for one increment, with cleanable dirt and planted defects.

Each ``*_rows`` function maps one :class:`~lakecdp.sample.world.Person` to the rows it contributes
to one source file: ``sort_key`` (the file's order), ``line`` (the exact bytes of the line, or the
Parquet fields), and its ground truth (planted defect, expected outcome, record id, person,
household). They are pure functions; :mod:`lakecdp.sample.generator` runs them in Spark.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cached_property, lru_cache
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from lakecdp.sample import names
from lakecdp.sample.config import SampleConfig
from lakecdp.sample.draws import Draw, permuted
from lakecdp.sample.world import Person, address, email_address, make_product, name_crowding, phone_formats

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
# background activity stops this long before as_of, so that only planted people look like cart
# abandoners or repeat browsers in the last hours
QUIET_MS = 3 * DAY_MS
CHURN_MS = 91 * DAY_MS
SHOP_URL = "https://shop.example.com"

FILES = {
    "crm": "crm/crm_customers_{n}.csv",
    "shop_customers": "shop_customers/customers_{n}.jsonl",
    "shop_orders": "shop_orders/orders_{n}.jsonl",
    "web_events": "web_events/web_events_{n}.jsonl",
    "email_events": "email_events/email_events_{n}.csv",
    "third_party": "third_party/enrichment_{n}.parquet",
    "products": "products/products_{n}.csv",
}
CRM_HEADER = (
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
)
EMAIL_HEADER = ("event_id", "event_type", "email", "campaign_id", "occurred_at", "bounce_type", "url")
PRODUCTS_HEADER = ("product_id", "name", "category", "price")
THIRD_PARTY_COLUMNS = ("ext_id", "full_name", "dob", "address", "postcode", "city", "income_band", "interests")
PEOPLE_HEADER = ("person_id", "household_id", "behaviour")

# reason code -> expected outcome, for the defects each source can carry (docs/sample-data.md)
Q, W = "quarantine", "warning"
SOURCE_DEFECTS: dict[str, dict[str, str]] = {
    "crm": {
        "MALFORMED_LINE": Q,
        "WRONG_FIELD_COUNT": Q,
        "MISSING_REQUIRED": Q,
        "INVALID_TIMESTAMP": Q,
        "INVALID_EMAIL": W,
        "INVALID_DATE": W,
        "IMPOSSIBLE_DATE": W,
        "FIELD_TOO_LONG": Q,
        "BAD_ENCODING": Q,
    },
    "shop_customers": {
        "MALFORMED_LINE": Q,
        "MISSING_REQUIRED": Q,
        "INVALID_TIMESTAMP": Q,
        "INVALID_EMAIL": W,
        "INVALID_DATE": W,
        "IMPOSSIBLE_DATE": W,
        "FIELD_TOO_LONG": Q,
    },
    "shop_orders": {"MALFORMED_LINE": Q, "MISSING_REQUIRED": Q, "INVALID_TIMESTAMP": Q, "INVALID_TYPE": Q},
    "web_events": {
        "MALFORMED_LINE": Q,
        "MISSING_REQUIRED": Q,
        "INVALID_TIMESTAMP": Q,
        "INVALID_TYPE": Q,
        "DUPLICATE": "duplicate",
    },
    "email_events": {
        "MALFORMED_LINE": Q,
        "WRONG_FIELD_COUNT": Q,
        "MISSING_REQUIRED": Q,
        "INVALID_TIMESTAMP": Q,
        "INVALID_EMAIL": Q,
        "BAD_ENCODING": Q,
        "DUPLICATE": "duplicate",
    },
    "third_party": {"MISSING_REQUIRED": Q, "FIELD_TOO_LONG": Q, "INVALID_DATE": W, "IMPOSSIBLE_DATE": W},
}
_DEFECT_ORDER = (
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
)
BAD_TIMESTAMPS_ISO = ("2026-13-45T25:61:00Z", "not-a-timestamp", "2026-02-30T10:00:00Z", "32/10/2026 10:00")
BAD_TIMESTAMPS_CRM = ("2026-13-45 25:61:00", "31/02/2026 10:00", "not a date", "2026-02-30 10:00:00")
BAD_NUMBERS = ("12,50", "abc", "£12.99", "N/A")
# (day, month, year) that no calendar has
BAD_DATES = ((31, 2, 1980), (13, 13, 1990), (30, 2, 1975), (0, 5, 1982), (32, 1, 1988))
PLACEHOLDER_DATES = (date(1900, 1, 1), date(1111, 11, 11))
# stands for one byte that is not UTF-8 (latin-1 'ü'); replaced after encoding
_BAD_BYTE_MARK = "\ue000"
_BAD_BYTE = b"\xfc"


@dataclass(frozen=True)
class Spec:
    """What one generation run makes: the world's seed and size, the increment and its time."""

    seed: int
    config: SampleConfig
    initial: int
    increment: int
    as_of_ms: int

    @property
    def per_increment(self) -> int:
        return round(self.initial * self.config.increments.new_people)

    @property
    def population(self) -> int:
        return self.initial + self.increment * self.per_increment

    @property
    def first_new(self) -> int:
        """The first person delivered for the first time in this increment."""
        return 0 if self.increment == 0 else self.initial + (self.increment - 1) * self.per_increment

    @property
    def window_start_ms(self) -> int:
        days = self.config.period_days if self.increment == 0 else self.config.increments.days
        return self.as_of_ms - days * DAY_MS

    @cached_property
    def defect_thresholds(self) -> dict[str, list[tuple[str, float]]]:
        """Per source, each applicable defect with the cumulative rate below which a row gets it."""
        thresholds: dict[str, list[tuple[str, float]]] = {}
        for source, applicable in SOURCE_DEFECTS.items():
            low, steps = 0.0, []
            for code in _DEFECT_ORDER:
                if code in applicable:
                    low += getattr(self.config.defects, code.lower())
                    steps.append((code, low))
            thresholds[source] = steps
        return thresholds

    def activity_end_ms(self, person: Person) -> int:
        if person.behaviour == "churn_risk":
            return self.as_of_ms - CHURN_MS
        return self.as_of_ms - QUIET_MS


# -- formatting ------------------------------------------------------------------------------------
def crm_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=8)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_time(ms: int, zone: str) -> str:
    """``2026-10-01T13:34:56.123+01:00``: web clients report local time with its offset."""
    return datetime.fromtimestamp(ms / 1000, _zone(zone)).isoformat(timespec="milliseconds")


def csv_line(values: list[str | None] | tuple[str | None, ...]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buffer.getvalue()[:-1]


def json_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def encode(line: str) -> bytes:
    data = line.encode("utf-8")
    return data.replace(_BAD_BYTE_MARK.encode("utf-8"), _BAD_BYTE) if _BAD_BYTE_MARK in line else data


def render_date(value: date | tuple[int, int, int], style: str) -> str:
    d, m, y = (value.day, value.month, value.year) if isinstance(value, date) else value
    if style == "crm":
        return f"{d:02d}/{m:02d}/{y:04d}"
    if style == "iso":
        return f"{y:04d}-{m:02d}-{d:02d}"
    return f"{y:04d}{m:02d}{d:02d}"


# -- dirt --------------------------------------------------------------------------------------------
def pick_defect(draw: Draw, source: str, spec: Spec) -> str | None:
    """At most one planted defect per row, each with its configured rate."""
    u = draw.u("defect")
    for code, threshold in spec.defect_thresholds[source]:
        if u < threshold:
            return code
    return None


def typo(draw: Draw, text: str) -> str:
    if len(text) < 3:
        return text + text[-1:]
    i = draw.integer("typo_at", 1, len(text) - 2)
    op = draw.integer("typo_op", 0, 2)
    if op == 0:
        return text[:i] + text[i + 1 :]
    if op == 1 and text[i] != text[i + 1]:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text[:i] + text[i] + text[i:]


def dirty_name(draw: Draw, person: Person, spec: Spec) -> tuple[str, str | None]:
    """First and last name as one record shows them; the last name may be missing."""
    dirt = spec.config.dirt
    first, last = person.first_name, person.last_name
    if person.nicknames and draw.chance("nickname", dirt.nickname):
        first = draw.pick("nickname_which", person.nicknames)
    if draw.chance("typo", dirt.typo):
        if draw.chance("typo_first", 0.5):
            first = typo(draw.child("first"), first)
        else:
            last = typo(draw.child("last"), last)
    if draw.chance("first_name_typo", dirt.first_name_typo):
        first = typo(draw.child("first_name_typo"), first)
    if draw.chance("swapped", dirt.swapped_name):
        first, last = last, first
    if draw.chance("surname_missing", dirt.missing_surname):
        return first, None
    return first, last


def postcode_typo(draw: Draw, postcode: str) -> str:
    """One digit mistyped or two neighbouring characters transposed ("2272" -> "2227")."""
    places = [i for i, c in enumerate(postcode) if c.isalnum()]
    if draw.chance("transpose", 0.5):
        pairs = [(a, b) for a, b in pairwise(places) if postcode[a] != postcode[b]]
        if pairs:
            a, b = draw.pick("pair", pairs)
            chars = list(postcode)
            chars[a], chars[b] = chars[b], chars[a]
            return "".join(chars)
    digits = [i for i in places if postcode[i].isdigit()]
    if not digits:
        return postcode
    i = draw.pick("digit", digits)
    other = (int(postcode[i]) + draw.integer("by", 1, 9)) % 10
    return postcode[:i] + str(other) + postcode[i + 1 :]


def record_postcode(draw: Draw, postcode: str, spec: Spec) -> str:
    """The postcode as one record shows it: with a typo at ``dirt.postcode_typo``."""
    if draw.chance("postcode_typo", spec.config.dirt.postcode_typo):
        return postcode_typo(draw.child("postcode_typo"), postcode)
    return postcode


def email_variant(draw: Draw, email: str) -> str:
    local, _, domain = email.partition("@")
    return draw.pick(
        "variant",
        (
            email.upper(),
            f"{local.capitalize()}@{domain.capitalize()}",
            f" {email}",
            f"{email}  ",
            f" {local.title()}@{domain}",
        ),
    )


def dirty_email(draw: Draw, email: str, spec: Spec) -> str | None:
    """Junk, a case/whitespace variant, missing, or as is (one draw, so the rates add up)."""
    dirt = spec.config.dirt
    u = draw.u("email_dirt")
    if u < dirt.junk_identifier:
        return draw.pick("junk_email", names.JUNK_EMAILS)
    u -= dirt.junk_identifier
    if u < dirt.email_variant:
        return email_variant(draw, email)
    u -= dirt.email_variant
    if u < dirt.missing_field:
        return None
    return email


def invalid_email(draw: Draw, email: str) -> str:
    local, _, domain = email.strip().partition("@")
    middle = max(1, len(local) // 2)
    return draw.pick(
        "invalid_email",
        (
            f"{local}{domain}",
            f"{local[:middle]} {local[middle:]}@{domain}",
            f"{local}@@{domain}",
        ),
    )


def dirty_phone(draw: Draw, person: Person, spec: Spec, styles: tuple[str, ...]) -> str | None:
    dirt = spec.config.dirt
    u = draw.u("phone_dirt")
    if u < dirt.junk_identifier:
        return draw.pick("junk_phone", names.JUNK_PHONES)
    if u < dirt.junk_identifier + dirt.missing_field:
        return None
    use_landline = person.mobile is None or draw.chance("landline", 0.25)
    number = person.landline if use_landline or person.mobile is None else person.mobile
    return phone_formats(number, person.country)[draw.pick("phone_style", styles)]


def too_long(draw: Draw, text: str) -> str:
    return ((text + " ") * 100)[: draw.integer("too_long", 201, 260)]


def impossible_date(draw: Draw, spec: Spec) -> date:
    if draw.chance("future", 0.5):
        as_of = datetime.fromtimestamp(spec.as_of_ms / 1000, timezone.utc).date()
        return as_of + timedelta(days=draw.integer("future_days", 30, 3000))
    return draw.pick("placeholder", PLACEHOLDER_DATES)


def bad_encoding(text: str) -> str:
    return text[:1] + _BAD_BYTE_MARK + text[1:]


def _row(
    sort_key: str,
    line: str,
    defect: str | None,
    source: str,
    record_key: str | None,
    person: Person | None,
    source_record_id: str | None = None,
) -> dict[str, Any]:
    return {
        "sort_key": sort_key,
        "line": encode(line),
        "defect": defect,
        "expected": SOURCE_DEFECTS[source][defect] if defect else None,
        "record_key": record_key,
        "source_record_id": source_record_id,
        "person_id": person.person_id if person else None,
        "household_id": person.household_id if person else None,
    }


def missing_fields(
    fields: dict[str, Any], source: str, spec: Spec, *, dob: str, address: tuple[str, ...], contact: tuple[str, ...]
) -> None:
    """Empty the kinds of field ``source`` never delivers (``missing_fields`` in the config)."""
    shape = spec.config.missing_fields
    emptied = (
        ((dob,) if source in shape.birth_date else ())
        + (address if source in shape.address else ())
        + (contact if source in shape.contact else ())
    )
    for name in emptied:
        fields[name] = None


# -- customer sources ----------------------------------------------------------------------------------
def crm_id(person: Person, copy: int, seed: int) -> str:
    return "C" + permuted(person.index * 2 + copy, seed, digits=7)


def shop_number(person: Person, copy: int, seed: int) -> str:
    return "S" + permuted(person.index * 2 + copy, seed, digits=7)


def crm_rows(spec: Spec, person: Person) -> list[dict[str, Any]]:
    """CRM records: every account of a person new in this increment, and changed ones later."""
    if not person.in_crm:
        return []
    rows = []
    dirt = spec.config.dirt
    for copy in range(person.crm_copies):
        customer_id = crm_id(person, copy, spec.seed)
        record = Draw(spec.seed, "crm", customer_id)
        new = person.index >= spec.first_new
        change = Draw(spec.seed, "crm_change", customer_id, spec.increment)
        if not new and not change.chance("changed", spec.config.increments.crm_changes):
            continue
        first, last = dirty_name(record, person, spec)
        email = (
            person.other_email
            if (record.chance("email_changed", dirt.changed_email) or (copy == 1 and record.chance("dup_email", 0.5)))
            else person.email
        )
        home = person.moved if record.chance("moved", dirt.changed_address) else person.home
        if new:
            if spec.increment == 0:
                modified = spec.as_of_ms - record.integer("modified_days", 1, 700) * DAY_MS
            else:
                modified = spec.window_start_ms + int(record.u("modified") * (spec.as_of_ms - spec.window_start_ms))
            modified -= record.integer("modified_s", 0, 86_399) * 1000
        else:
            # an email change is only visible where the record shows an email at all
            shows_email = dirty_email(record, email, spec) not in (None, *names.JUNK_EMAILS)
            if shows_email and change.chance("email_or_address", 0.5):
                email = email_address(
                    change.child("email"),
                    person.first_name,
                    person.last_name,
                    person.country,
                    name_crowding(spec.initial),
                )
            else:
                home = address(change.child("address"), person.country)
            modified = spec.window_start_ms + int(
                change.u("modified") * (spec.as_of_ms - HOUR_MS - spec.window_start_ms)
            )
        fields: dict[str, str | None] = {
            "CustomerID": customer_id,
            "FirstName": first,
            "LastName": last,
            "Email": dirty_email(record, email, spec),
            "Phone": dirty_phone(record, person, spec, ("national", "national", "international", "compact")),
            "DOB": None if record.chance("dob_missing", dirt.missing_field) else render_date(person.dob, "crm"),
            "Street": None if record.chance("street_missing", dirt.missing_field) else home.street,
            "PostCode": record_postcode(record, home.postcode, spec),
            "Town": home.town,
            "Country": record.pick("country_text", names.COUNTRIES[person.country][0]),
            "EmailOptIn": "Y" if record.chance("opt_in", 0.6) else "N",
            "LastModified": crm_time(modified),
        }
        missing_fields(
            fields, "crm", spec, dob="DOB", address=("Street", "PostCode", "Town"), contact=("Email", "Phone")
        )
        defects = Draw(spec.seed, "crm_defect", customer_id, spec.increment)
        defect = pick_defect(defects, "crm", spec)
        record_key: str | None = customer_id
        if defect == "MISSING_REQUIRED":
            missing = defects.pick("missing", ("CustomerID", "LastModified"))
            fields[missing] = None
            record_key = None if missing == "CustomerID" else customer_id
        elif defect == "INVALID_TIMESTAMP":
            fields["LastModified"] = defects.pick("bad_ts", BAD_TIMESTAMPS_CRM)
        elif defect == "INVALID_EMAIL":
            fields["Email"] = invalid_email(defects, email)
        elif defect == "INVALID_DATE":
            fields["DOB"] = render_date(defects.pick("bad_date", BAD_DATES), "crm")
        elif defect == "IMPOSSIBLE_DATE":
            fields["DOB"] = render_date(impossible_date(defects, spec), "crm")
        elif defect == "FIELD_TOO_LONG":
            fields["FirstName"] = too_long(defects, first)
        elif defect == "BAD_ENCODING":
            fields["LastName"] = bad_encoding(last or first)
        values = list(fields.values())
        if defect == "WRONG_FIELD_COUNT":
            values = values + ["EXTRA"] if defects.chance("too_many", 0.5) else values[:-1]
        line = csv_line(values)
        if defect == "MALFORMED_LINE":
            line = '"' + line
        rows.append(_row(customer_id, line, defect, "crm", record_key, person, customer_id))
    return rows


def shop_customer_rows(spec: Spec, person: Person) -> list[dict[str, Any]]:
    if not person.in_shop or person.index < spec.first_new:
        return []
    rows = []
    dirt = spec.config.dirt
    for copy in range(person.shop_copies):
        number = shop_number(person, copy, spec.seed)
        record = Draw(spec.seed, "shop", number)
        first, last = dirty_name(record, person, spec)
        email = (
            person.other_email
            if (record.chance("email_changed", dirt.changed_email) or (copy == 1 and record.chance("dup_email", 0.5)))
            else person.email
        )
        home = person.moved if record.chance("moved", dirt.changed_address) else person.home
        if spec.increment == 0:
            created = spec.as_of_ms - record.integer("created_days", 30, 900) * DAY_MS
        else:
            created = spec.window_start_ms + int(record.u("created") * (spec.as_of_ms - spec.window_start_ms - DAY_MS))
        created -= record.integer("created_s", 0, 86_399) * 1000
        updated = created + int(record.u("updated") * (spec.as_of_ms - HOUR_MS - created))
        obj: dict[str, Any] = {
            "customer_no": number,
            "email": dirty_email(record, email, spec),
            "name": {"first": first, "last": last},
            "phone": dirty_phone(record, person, spec, ("e164", "e164", "international")),
            "birth_date": None if record.chance("dob_missing", dirt.missing_field) else render_date(person.dob, "iso"),
            "address": {
                "line1": None if record.chance("street_missing", dirt.missing_field) else home.street,
                "zip": record_postcode(record, home.postcode, spec),
                "city": home.town,
                "country_code": person.country,
            },
            "marketing_consent": record.chance("consent", 0.6),
            # SMS marketing is its own opt-in (fewer people give it)
            "sms_consent": record.chance("sms_consent", 0.35),
            "created_at": iso_utc(created),
            "updated_at": iso_utc(updated),
        }
        shape = spec.config.missing_fields
        if "shop_customers" in shape.birth_date:
            obj["birth_date"] = None
        if "shop_customers" in shape.address:
            obj["address"].update(line1=None, zip=None, city=None)
        if "shop_customers" in shape.contact:
            obj["email"] = obj["phone"] = None
        defects = Draw(spec.seed, "shop_defect", number, spec.increment)
        defect = pick_defect(defects, "shop_customers", spec)
        record_key: str | None = number
        if defect == "MISSING_REQUIRED":
            missing = defects.pick("missing", ("customer_no", "updated_at"))
            del obj[missing]
            record_key = None if missing == "customer_no" else number
        elif defect == "INVALID_TIMESTAMP":
            obj["updated_at"] = defects.pick("bad_ts", BAD_TIMESTAMPS_ISO)
        elif defect == "INVALID_EMAIL":
            obj["email"] = invalid_email(defects, email)
        elif defect == "INVALID_DATE":
            obj["birth_date"] = render_date(defects.pick("bad_date", BAD_DATES), "iso")
        elif defect == "IMPOSSIBLE_DATE":
            obj["birth_date"] = render_date(impossible_date(defects, spec), "iso")
        elif defect == "FIELD_TOO_LONG":
            obj["name"]["first"] = too_long(defects, first)
        line = json_line(obj)
        if defect == "MALFORMED_LINE":
            line = line[: len(line) // 2]
        rows.append(_row(number, line, defect, "shop_customers", record_key, person, number))
    return rows


def third_party_rows(spec: Spec, person: Person) -> list[dict[str, Any]]:
    if not person.in_third_party or person.index < spec.first_new:
        return []
    dirt = spec.config.dirt
    ext_id = "T" + permuted(person.index, spec.seed, digits=9)
    record = Draw(spec.seed, "third_party", ext_id)
    first, last = dirty_name(record, person, spec)
    home = person.moved if record.chance("moved", dirt.changed_address) else person.home
    interests = sorted({record.pick(f"interest{i}", names.INTERESTS) for i in range(record.integer("interests", 1, 4))})
    fields: dict[str, str | None] = {
        "ext_id": ext_id,
        "full_name": first
        if last is None
        else (f"{last.upper()}, {first}" if record.chance("surname_first", 0.5) else f"{first} {last}"),
        "dob": None if record.chance("dob_missing", dirt.missing_field) else render_date(person.dob, "compact"),
        "address": None if record.chance("street_missing", dirt.missing_field) else home.street,
        "postcode": record_postcode(record, home.postcode, spec),
        "city": home.town,
        "income_band": record.pick("income", names.INCOME_BANDS),
        "interests": ",".join(interests),
    }
    missing_fields(fields, "third_party", spec, dob="dob", address=("address", "postcode", "city"), contact=())
    defects = Draw(spec.seed, "third_party_defect", ext_id, spec.increment)
    defect = pick_defect(defects, "third_party", spec)
    record_key: str | None = ext_id
    if defect == "MISSING_REQUIRED":
        fields["ext_id"] = None
        record_key = None
    elif defect == "FIELD_TOO_LONG":
        fields["full_name"] = too_long(defects, fields["full_name"] or first)
    elif defect == "INVALID_DATE":
        fields["dob"] = render_date(defects.pick("bad_date", BAD_DATES), "compact")
    elif defect == "IMPOSSIBLE_DATE":
        fields["dob"] = render_date(impossible_date(defects, spec), "compact")
    row = _row(ext_id, "", defect, "third_party", record_key, person, ext_id)
    del row["line"]
    row.update(fields)
    return [row]


# -- behaviour: orders, web and email events ---------------------------------------------------------
@dataclass(frozen=True)
class Order:
    order_id: str
    number: int
    ordered_ms: int
    customer_no: str
    status: str
    items: tuple[tuple[str, int, float], ...]

    @property
    def total(self) -> float:
        return round(sum(qty * price for _, qty, price in self.items), 2)


def orders_of(spec: Spec, person: Person) -> list[Order]:
    """The person's orders delivered in this increment (shop customers only, first account)."""
    if not person.in_shop:
        return []
    draw = Draw(spec.seed, "orders", person.index, spec.increment)
    new = person.index >= spec.first_new
    start, end = spec.window_start_ms, spec.activity_end_ms(person)
    if new:
        count = draw.integer("count", 0, 4)
    else:
        count = 1 if person.behaviour != "churn_risk" and draw.chance("reorder", 0.25) else 0
    plans = [(j, start + int(draw.u(f"at{j}") * max(0, end - start)), False) for j in range(count)]
    if person.behaviour == "high_spender_recent" and spec.increment == 0:
        # three large orders in the last three weeks (before the quiet days)
        plans += [(5 + j, spec.as_of_ms - draw.integer(f"hs_day{j}", 4, 20) * DAY_MS, True) for j in range(3)]
    customer_no = shop_number(person, 0, spec.seed)
    orders = []
    for number, ordered_ms, big in plans:
        order = draw.child("order", number)
        items = []
        for line in range(order.integer("items", 2, 4) if big else order.integer("items", 1, 3)):
            item = order.child("item", line)
            if big:
                # outerwear, shoes and bags: the dearest categories
                index = item.pick("category", (0, 1, 6)) + 10 * item.integer(
                    "product", 0, spec.config.products // 10 - 1
                )
                index = 1 + (index - 1) % spec.config.products
            else:
                index = item.integer("product", 0, spec.config.products - 1)
            product = make_product(spec.seed, index)
            qty = item.integer("qty", 2, 3) if big else item.integer("qty", 1, 2)
            items.append((product.product_id, qty, product.price))
        status_u = order.u("status")
        status = "completed" if big or status_u < 0.9 else ("cancelled" if status_u < 0.95 else "refunded")
        ms = ordered_ms - order.integer("second", 0, 86_399) * 1000
        order_id = "O" + permuted(person.index * 1000 + spec.increment * 10 + number, spec.seed, digits=10)
        orders.append(Order(order_id, number, ms, customer_no, status, tuple(items)))
    return orders


def order_rows(spec: Spec, person: Person) -> list[dict[str, Any]]:
    rows = []
    for order in orders_of(spec, person):
        draw = Draw(spec.seed, "order_line", order.order_id)
        obj: dict[str, Any] = {
            "order_id": order.order_id,
            "customer_no": order.customer_no,
            "email": person.email if draw.chance("has_email", 0.9) else None,
            "ordered_at": iso_utc(order.ordered_ms),
            "status": order.status,
            "currency": "GBP" if person.country == "GB" else "EUR",
            "total": order.total,
            "items": [{"sku": sku, "qty": qty, "unit_price": price} for sku, qty, price in order.items],
        }
        defects = Draw(spec.seed, "order_defect", order.order_id)
        defect = pick_defect(defects, "shop_orders", spec)
        record_key: str | None = order.order_id
        if defect == "MISSING_REQUIRED":
            missing = defects.pick("missing", ("order_id", "ordered_at", "total"))
            del obj[missing]
            record_key = None if missing == "order_id" else order.order_id
        elif defect == "INVALID_TIMESTAMP":
            obj["ordered_at"] = defects.pick("bad_ts", BAD_TIMESTAMPS_ISO)
        elif defect == "INVALID_TYPE":
            obj["total"] = defects.pick("bad_number", BAD_NUMBERS)
        line = json_line(obj)
        if defect == "MALFORMED_LINE":
            line = line[: len(line) // 2]
        rows.append(_row(order.order_id, line, defect, "shop_orders", record_key, person))
    return rows


def device_id(person: Person, device: int, seed: int) -> str:
    return "d-" + Draw(seed, "device", person.index, device).hex("id")


def repeat_product(spec: Spec, person: Person) -> str:
    """The product a planted repeat browser keeps looking at in this increment."""
    index = Draw(spec.seed, "repeat_browser", person.index, spec.increment).integer(
        "product", 0, spec.config.products - 1
    )
    return make_product(spec.seed, index).product_id


def _web_event(
    event_id: str,
    event_type: str,
    ms: int,
    person: Person,
    device: str,
    session: str,
    user: dict[str, str] | None,
    product: Any = None,
    order_id: str | None = None,
    page: str | None = None,
    revenue: float | None = None,
) -> tuple[int, dict[str, Any]]:
    obj: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "ts": local_time(ms, person.zone),
        "anonymous_id": device,
        "session_id": session,
    }
    if user is not None:
        obj["user"] = user
    if product is not None:
        obj["page_url"] = f"{SHOP_URL}/p/{product.product_id}"
        obj["product_id"] = product.product_id
        obj["price"] = product.price
    else:
        obj["page_url"] = page or f"{SHOP_URL}/"
    if order_id is not None:
        obj["order_id"] = order_id
    if revenue is not None:  # a purchase carries the order's value, as web analytics tags send it
        obj["revenue"] = revenue
    return ms, obj


def web_rows(spec: Spec, person: Person) -> list[dict[str, Any]]:
    """Browsing sessions: anonymous until a device logs in, then with ``user``; purchases; planted behaviour."""
    if not person.web_active:
        return []
    seed = spec.seed
    draw = Draw(seed, "web", person.index, spec.increment)
    new = person.index >= spec.first_new
    devices = [device_id(person, d, seed) for d in range(person.devices)]
    user = {"email": person.email}
    if person.in_shop:
        user["customer_no"] = shop_number(person, 0, seed)
    events: list[tuple[int, dict[str, Any]]] = []
    end = spec.activity_end_ms(person)
    if new:
        sessions = max(draw.integer("sessions", 3, 8), 2 * person.devices)
        start = spec.window_start_ms
    else:
        sessions = 0 if person.behaviour == "churn_risk" else draw.integer("sessions", 0, 2)
        # later increments reach one period back: events from there are late arrivals
        start = spec.window_start_ms - spec.config.increments.days * DAY_MS
    for s in range(sessions):
        session = draw.child("session", s)
        device = s % person.devices
        at = start + int((s + session.u("at")) / sessions * max(0, end - start))
        if at < spec.window_start_ms and not session.chance("late", spec.config.defects.late_event):
            continue
        login_session = device + person.devices
        logs_in = person.web_login and new and s == login_session
        known = person.web_login and (not new or s > login_session)
        session_id = "s-" + session.hex("id")
        for pos in range(session.integer("events", 2, 7)):
            event = session.child("event", pos)
            product = None
            if pos == 0:
                kind = "page_view"
            elif logs_in and pos == 1:
                kind = "login"
            else:
                u = event.u("kind")
                kind = (
                    "page_view"
                    if u < 0.35
                    else "product_view"
                    if u < 0.8
                    else "add_to_cart"
                    if u < 0.92
                    else "remove_from_cart"
                )
            if kind in ("product_view", "add_to_cart", "remove_from_cart"):
                product = make_product(seed, event.integer("product", 0, spec.config.products - 1))
            page = (
                f"{SHOP_URL}/c/{event.pick('category', names.PRODUCT_CATEGORIES)}"
                if kind == "page_view" and pos
                else None
            )
            with_user = known or (logs_in and pos >= 1)
            at += event.integer("gap", 5, 180) * 1000
            events.append(
                _web_event(
                    "w-" + event.hex("id"),
                    kind,
                    at,
                    person,
                    devices[device],
                    session_id,
                    user if with_user else None,
                    product,
                    page=page,
                )
            )
    if person.web_login:
        for order in orders_of(spec, person):
            checkout = Draw(seed, "web_order", order.order_id)
            session_id = "s-" + checkout.hex("session")
            events.append(
                _web_event(
                    "w-" + checkout.hex("checkout"),
                    "checkout",
                    order.ordered_ms - 120_000,
                    person,
                    devices[0],
                    session_id,
                    user,
                    page=f"{SHOP_URL}/checkout",
                )
            )
            events.append(
                _web_event(
                    "w-" + checkout.hex("purchase"),
                    "purchase",
                    order.ordered_ms,
                    person,
                    devices[0],
                    session_id,
                    user,
                    order_id=order.order_id,
                    page=f"{SHOP_URL}/checkout/done",
                    revenue=order.total,
                )
            )
    planted = Draw(seed, "web_behaviour", person.index, spec.increment)
    if person.behaviour == "cart_abandoner":
        at = spec.as_of_ms - planted.integer("hours", 1, 5) * HOUR_MS - planted.integer("minutes", 0, 59) * 60_000
        product = make_product(seed, planted.integer("product", 0, spec.config.products - 1))
        session_id = "s-" + planted.hex("cart_session")
        for i, kind in enumerate(("page_view", "product_view", "add_to_cart")):
            events.append(
                _web_event(
                    "w-" + planted.hex(f"cart{i}"),
                    kind,
                    at + i * 40_000,
                    person,
                    devices[0],
                    session_id,
                    user,
                    None if kind == "page_view" else product,
                )
            )
    elif person.behaviour == "repeat_browser":
        product_id = repeat_product(spec, person)
        product = make_product(seed, int(product_id[1:]) - 1)
        for visit, (low, high) in enumerate(((6, 20), (26, 44))):
            at = spec.as_of_ms - planted.integer(f"hours{visit}", low, high) * HOUR_MS
            session_id = "s-" + planted.hex(f"repeat_session{visit}")
            for i, kind in enumerate(("page_view", "product_view", "product_view")):
                events.append(
                    _web_event(
                        "w-" + planted.hex(f"repeat{visit}_{i}"),
                        kind,
                        at + i * 60_000,
                        person,
                        devices[0],
                        session_id,
                        user,
                        None if kind == "page_view" else product,
                    )
                )
    rows = []
    for ms, obj in events:
        event_id = obj["event_id"]
        defects = Draw(seed, "web_defect", event_id)
        defect = pick_defect(defects, "web_events", spec)
        record_key: str | None = event_id
        if defect == "MISSING_REQUIRED":
            missing = defects.pick("missing", ("event_id", "event_type", "ts"))
            del obj[missing]
            record_key = None if missing == "event_id" else event_id
        elif defect == "INVALID_TIMESTAMP":
            obj["ts"] = defects.pick("bad_ts", BAD_TIMESTAMPS_ISO)
        elif defect == "INVALID_TYPE":
            obj["price"] = defects.pick("bad_number", BAD_NUMBERS)
        line = json_line(obj)
        if defect == "MALFORMED_LINE":
            line = line[: len(line) // 2]
        # a login event is the customer-like record that ties a device to a person
        login_id = obj["anonymous_id"] if obj.get("event_type") == "login" else None
        key = f"{ms:013d}|{event_id}"
        rows.append(_row(key + "|0", line, defect, "web_events", record_key, person, login_id))
        if defect is None and defects.chance("duplicate", spec.config.defects.duplicate_event):
            duplicate = _row(key + "|1", line, "DUPLICATE", "web_events", event_id, person)
            rows.append(duplicate)
    return rows


def campaigns(spec: Spec) -> list[tuple[int, int, str]]:
    """(number, send time, campaign id) of the campaigns mailed in this increment."""
    days = spec.config.period_days if spec.increment == 0 else spec.config.increments.days
    count = max(1, days // 7 * spec.config.campaigns_per_week) if spec.config.campaigns_per_week else 0
    start = spec.window_start_ms
    # the last campaign leaves two days for opens before the quiet days start
    end = spec.as_of_ms - QUIET_MS - 2 * DAY_MS
    result = []
    for c in range(count):
        at = start + int((c + 0.5) / count * (end - start))
        day = datetime.fromtimestamp(at / 1000, timezone.utc).strftime("%Y%m%d")
        result.append((c, at, f"cmp-{day}-{spec.increment}{c:03d}"))
    return result


def email_rows(spec: Spec, person: Person) -> list[dict[str, Any]]:
    if not person.mailable:
        return []
    if spec.increment > 0 and person.behaviour in ("unsubscribed", "hard_bounced"):
        return []  # suppressed: no more mail after the unsubscribe / hard bounce
    seed = spec.seed
    reach = spec.config.campaign_reach
    end = spec.activity_end_ms(person)
    events: list[tuple[int, list[str | None]]] = []

    def add(draw: Draw, kind: str, ms: int, campaign: str, bounce: str | None = None, url: str | None = None) -> None:
        email = person.email
        if draw.chance("variant", spec.config.dirt.email_variant):
            email = email_variant(draw, email)
        events.append((ms, ["e-" + draw.hex(kind), kind, email, campaign, iso_utc(ms), bounce, url]))

    for number, at, campaign in campaigns(spec):
        if at > end - 2 * DAY_MS:
            break
        mail = Draw(seed, "email", person.index, spec.increment, number)
        if not mail.chance("reach", reach):
            continue
        send = at + mail.integer("send_s", 0, 7200) * 1000
        add(mail, "send", send, campaign)
        if mail.chance("soft_bounce", 0.02):
            add(mail, "bounce", send + 60_000, campaign, bounce="soft")
        elif mail.chance("open", 0.45):
            opened = send + mail.integer("open_s", 60, 48 * 3600) * 1000
            add(mail, "open", opened, campaign)
            if mail.chance("click", 0.3):
                url = f"{SHOP_URL}/c/{mail.pick('category', names.PRODUCT_CATEGORIES)}?utm_campaign={campaign}"
                add(mail, "click", opened + mail.integer("click_s", 5, 600) * 1000, campaign, url=url)
    if spec.increment == 0 and person.behaviour in ("unsubscribed", "hard_bounced"):
        planted = Draw(seed, "email_behaviour", person.index)
        send = spec.as_of_ms - planted.integer("hours", 26, 60) * HOUR_MS
        campaign = "cmp-" + datetime.fromtimestamp(send / 1000, timezone.utc).strftime("%Y%m%d") + "-final"
        add(planted, "send", send, campaign)
        if person.behaviour == "unsubscribed":
            add(planted, "unsubscribe", send + planted.integer("unsub_s", 600, 20_000) * 1000, campaign)
        else:
            add(planted, "bounce", send + 90_000, campaign, bounce="hard")
    rows = []
    for ms, values in events:
        event_id = values[0]
        defects = Draw(seed, "email_defect", event_id)
        defect = pick_defect(defects, "email_events", spec)
        record_key: str | None = event_id
        if defect == "MISSING_REQUIRED":
            missing = defects.integer("missing", 0, 2)
            values[(0, 2, 4)[missing]] = None
            record_key = None if missing == 0 else event_id
        elif defect == "INVALID_TIMESTAMP":
            values[4] = defects.pick("bad_ts", BAD_TIMESTAMPS_ISO)
        elif defect == "INVALID_EMAIL":
            values[2] = invalid_email(defects, person.email)
        elif defect == "BAD_ENCODING":
            values[2] = bad_encoding(values[2] or person.email)
        elif defect == "WRONG_FIELD_COUNT":
            values = values + ["EXTRA"] if defects.chance("too_many", 0.5) else values[:-1]
        line = csv_line(values)
        if defect == "MALFORMED_LINE":
            line = '"' + line
        key = f"{ms:013d}|{event_id}"
        rows.append(_row(key + "|0", line, defect, "email_events", record_key, person))
        if defect is None and defects.chance("duplicate", spec.config.defects.duplicate_event):
            duplicate = _row(key + "|1", line, "DUPLICATE", "email_events", event_id, person)
            rows.append(duplicate)
    return rows


def people_rows(spec: Spec, person: Person) -> list[dict[str, Any]]:
    """``people_<n>.csv``: every person of the world so far and the behaviour planted for them."""
    behaviour = person.behaviour
    if behaviour == "repeat_browser":
        behaviour = f"repeat_browser:{repeat_product(spec, person)}"
    line = csv_line([person.person_id, person.household_id, behaviour])
    return [
        {
            "sort_key": person.person_id,
            "line": line.encode("utf-8"),
            "defect": None,
            "expected": None,
            "record_key": None,
            "source_record_id": None,
            "person_id": person.person_id,
            "household_id": person.household_id,
        }
    ]


def product_lines(spec: Spec) -> list[str]:
    """The catalog (increment 0 only): header and one line per product."""
    lines = [csv_line(PRODUCTS_HEADER)]
    for index in range(spec.config.products):
        product = make_product(spec.seed, index)
        lines.append(csv_line([product.product_id, product.name, product.category, f"{product.price:.2f}"]))
    return lines
