"""Benchmark: the embedded silver mappers (issue 14) against a bare DuckDB mapping, same run.

    PYTHONPATH=$PWD/lib:$PWD .venv/bin/python -m bench.embedded_silver_bench --rows 1000000 [--record]

Typed rows in the shape of the CRM source (the generator's names, countries written as
``United Kingdom`` / ``UK`` / ``Deutschland``..., phones in its national, international, E.164 and
compact styles, some junk, ~2.5 rows per person as across sources) and of web events are made in
memory (seeded). Timed, each in this process one after the other:

- **phones**: distinct (number, region) pairs per second through the fast path with phonenumbers
  behind it (:func:`lakecdp.ingest.phones.e164_one`) against phonenumbers alone
  (:func:`lakecdp.ingest.phones.e164`, on a sample of the same pairs); the two must agree.
- **customer_records**: :func:`lakecdp.ingest.embedded_silver.to_silver` (mapping + cleaners),
  against the baseline: the same mapping written by hand as one DuckDB ``SELECT`` with casts and
  no cleaners (what any embedded mapping costs at least).
- **events**: the same for web events.

The box is shared: the figures that count are the ratios within the run.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa

from bench.results import append_results, machine, stamp
from lakecdp.ingest.embedded_silver import to_silver
from lakecdp.ingest.phones import e164, e164_one
from lakecdp.ingest.sources import load_sources
from lakecdp.sample import names
from lakecdp.sample.world import phone_formats

ROOT = Path(__file__).resolve().parents[1]
AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)
STYLES = ("national", "national", "international", "compact", "e164")


def _nsn(rng: random.Random, country: str) -> str:
    """A national significant number as the generator draws them (lakecdp.sample.world.phone_number)."""
    digits = "".join(rng.choice("0123456789") for _ in range(8))
    if rng.random() < 0.7:  # mobile
        if country == "GB":
            return rng.choice(("7700", "7911", "7824", "7400", "7520", "7984")) + digits[:6]
        if country == "IE":
            return "8" + rng.choice("35679") + digits[:7]
        return rng.choice(("151", "152", "160", "170", "176")) + digits
    if country == "GB":
        return "20" + digits
    if country == "IE":
        return "1" + digits[:7]
    return rng.choice(("30", "40", "89", "69")) + digits


def crm_rows(size: int, seed: int = 14) -> pa.Table:
    rng = random.Random(seed)
    people = max(1, int(size / 2.5))
    firsts = [f for f, _ in names.FIRST_NAMES]
    pool = []
    for i in range(people):
        country = rng.choice(("GB", "GB", "GB", "IE", "DE"))
        first, last = rng.choice(firsts), rng.choice(names.SURNAMES)
        town, prefix = rng.choice(names.TOWNS[country])
        pool.append(
            (
                country,
                first,
                last,
                f"{first}.{last}{i}@{rng.choice(names.EMAIL_DOMAINS[country])}".lower(),
                phone_formats(_nsn(rng, country), country),
                f"{rng.randint(1, 240)} {rng.choice(names.STREETS[country])}",
                f"{prefix} {rng.randint(1, 9)}AB",
                town,
            )
        )
    columns: dict[str, list] = {
        k: []
        for k in (
            "CustomerID FirstName LastName Email Phone DOB Street PostCode Town Country EmailOptIn LastModified".split()
        )
    }
    start = datetime(2020, 1, 1)
    for row in range(size):
        country, first, last, email, phones, street, postcode, town = pool[rng.randrange(people)]
        u = rng.random()
        columns["CustomerID"].append(f"C{row}")
        columns["FirstName"].append(first if u > 0.05 else f"  {first.upper()} ")
        columns["LastName"].append(last)
        columns["Email"].append(email if u > 0.03 else rng.choice(names.JUNK_EMAILS))
        columns["Phone"].append(phones[rng.choice(STYLES)] if u > 0.02 else rng.choice(names.JUNK_PHONES))
        columns["DOB"].append(start.date() - timedelta(days=rng.randrange(365 * 70)))
        columns["Street"].append(street)
        columns["PostCode"].append(postcode.lower() if u < 0.3 else postcode)
        columns["Town"].append(town)
        columns["Country"].append(rng.choice(names.COUNTRIES[country][0]))
        columns["EmailOptIn"].append(rng.choice(("Y", "N", None)))
        columns["LastModified"].append(start + timedelta(seconds=rng.randrange(10**8)))
    types = {"DOB": pa.date32(), "LastModified": pa.timestamp("us")}
    table = {"_row": pa.array(range(size), pa.int64())}
    for name, values in columns.items():
        table[name] = pa.array(values, types.get(name, pa.string()))
    table["_warnings"] = pa.array([[]] * size, pa.list_(pa.string()))
    return pa.table(table)


def web_rows(size: int, seed: int = 15) -> pa.Table:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1)
    user_type = pa.struct([("email", pa.string()), ("customer_no", pa.string())])
    kinds = ("page_view", "page_view", "page_view", "product_view", "add_to_cart", "login", "purchase")
    users = [None if rng.random() < 0.6 else {"email": f"u{i}@x.com", "customer_no": f"S{i}"} for i in range(5000)]
    return pa.table(
        {
            "_row": pa.array(range(size), pa.int64()),
            "event_id": [f"w{i}" for i in range(size)],
            "event_type": [rng.choice(kinds) for _ in range(size)],
            "ts": pa.array([start + timedelta(seconds=i) for i in range(size)], pa.timestamp("us")),
            "anonymous_id": [f"d{rng.randrange(200_000)}" for _ in range(size)],
            "session_id": [f"s{i // 20}" for i in range(size)],
            "user": pa.array([users[rng.randrange(5000)] for _ in range(size)], user_type),
            "page_url": [f"https://shop/p/{rng.randrange(500)}" for _ in range(size)],
            "product_id": [f"P{rng.randrange(500)}" for _ in range(size)],
            "price": pa.array([rng.random() * 100 for _ in range(size)], pa.float64()),
            "revenue": pa.array([None] * size, pa.float64()),
            "order_id": [None] * size,
        }
    )


_BARE_CRM = """
SELECT _row, CAST(CustomerID AS VARCHAR) AS source_record_id, CAST(FirstName AS VARCHAR) AS first_name,
  CAST(LastName AS VARCHAR) AS last_name, CAST(Email AS VARCHAR) AS email, CAST(Phone AS VARCHAR) AS phone,
  CAST(DOB AS DATE) AS date_of_birth, CAST(Street AS VARCHAR) AS address_line1, CAST(PostCode AS VARCHAR) AS postcode,
  CAST(Town AS VARCHAR) AS city, CAST(Country AS VARCHAR) AS country, CAST(CustomerID AS VARCHAR) AS crm_id,
  CASE upper(trim(EmailOptIn)) WHEN 'Y' THEN true WHEN 'N' THEN false END AS email_consent,
  CAST(LastModified AS TIMESTAMP) AS updated_at
FROM rows ORDER BY _row
"""
_BARE_EVENTS = """
SELECT _row, event_id, event_type, ts AS occurred_at, "user".email AS email, anonymous_id AS device_id,
  "user".customer_no AS customer_number, session_id, product_id, coalesce(price, revenue) AS value, order_id,
  'web' AS channel, page_url AS url
FROM rows ORDER BY _row
"""


def _bare(rows: pa.Table, sql: str) -> float:
    con = duckdb.connect()
    con.register("rows", rows)
    started = time.perf_counter()
    con.sql(sql).to_arrow_table()
    seconds = time.perf_counter() - started
    con.close()
    return seconds


def _timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--phone-sample", type=int, default=20_000, help="pairs timed through phonenumbers alone")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    load = machine()
    sources = load_sources(ROOT / "conf")
    now = datetime.now(timezone.utc)

    crm = crm_rows(args.rows)
    # phones: the distinct pairs to_silver works out (the region is the cleaned country)
    from lakecdp.ingest.cleaners import country_code, junk_set, null_if_junk

    regions = country_code(crm.column("Country")).to_pylist()
    numbers = null_if_junk(crm.column("Phone"), junk_set(sources["crm"].junk_values)).to_pylist()
    pairs = list(dict.fromkeys((n, r or "GB") for n, r in zip(numbers, regions)))
    fast_s, fast = _timed(lambda: [e164_one(n, r) for n, r in pairs])
    sample = pairs[: args.phone_sample]
    slow_s, slow = _timed(lambda: [e164(n, r) for n, r in sample])
    assert fast[: len(sample)] == slow, "fast path and phonenumbers disagree"  # type: ignore[index]
    fast_rate, slow_rate = len(pairs) / fast_s, len(sample) / slow_s

    bare_s = _bare(crm, _BARE_CRM)
    silver_s, records = _timed(lambda: to_silver(crm, sources["crm"], run_id="bench", ingested_at=now, as_of=AS_OF))
    assert records.num_rows == crm.num_rows  # type: ignore[attr-defined]

    web = web_rows(args.events)
    bare_events_s = _bare(web, _BARE_EVENTS)
    events_s, events = _timed(
        lambda: to_silver(web, sources["web_events"], run_id="bench", ingested_at=now, as_of=AS_OF)
    )
    assert events.num_rows == web.num_rows  # type: ignore[attr-defined]

    table = [
        "| what | embedded silver | in-run baseline | ratio |",
        "|---|---|---|---|",
        f"| phones, distinct pairs/s ({len(pairs):,} pairs; phonenumbers on the first {len(sample):,}) "
        f"| {fast_rate:,.0f} (fast path + phonenumbers behind it) | {slow_rate:,.0f} (phonenumbers alone) "
        f"| {fast_rate / slow_rate:.1f}x faster |",
        f"| customer_records, {crm.num_rows:,} CRM rows: rows/s (s) | {crm.num_rows / silver_s:,.0f} ({silver_s:.1f} s) "
        f"| bare DuckDB mapping, no cleaners: {crm.num_rows / bare_s:,.0f} ({bare_s:.2f} s) "
        f"| {silver_s / bare_s:.0f}x the bare time |",
        f"| events, {web.num_rows:,} web events: rows/s (s) | {web.num_rows / events_s:,.0f} ({events_s:.1f} s) "
        f"| bare DuckDB mapping: {web.num_rows / bare_events_s:,.0f} ({bare_events_s:.2f} s) "
        f"| {events_s / bare_events_s:.0f}x the bare time |",
    ]
    text = (
        f"## Embedded silver mappers: {crm.num_rows:,} customer rows, {web.num_rows:,} events (issue 14)\n\n"
        f"Measured {stamp()}, {load}. Command: `PYTHONPATH=$PWD/lib:$PWD .venv/bin/python -m "
        f"bench.embedded_silver_bench --rows {args.rows} --events {args.events} --record`. Rows made in memory "
        "(CRM shape: the generator's names, countries and phone styles, ~2.5 rows per person, 2% junk phones); "
        "each figure is one pass in one process, the baseline measured in the same run.\n\n" + "\n".join(table)
    )
    print(text)
    if args.record:
        append_results(text)


if __name__ == "__main__":
    main()
