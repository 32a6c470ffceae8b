"""The intake's row-level validator against the Spark validator (the oracle) on the same messages."""

from __future__ import annotations

import json

from lakecdp.api.validation import validate_event
from lakecdp.ingest.sources import load_sources
from lakecdp.ingest.stream import as_json_messages
from conftest import REPO_ROOT

GOOD_WEB = {"event_id": "w-1", "event_type": "purchase", "ts": "2026-10-01T12:34:56.123+01:00",
            "anonymous_id": "d-1", "user": {"email": "ada@example.com", "customer_no": "S1"}, "revenue": 59.97}
CASES = [
    ("web_events", GOOD_WEB),
    ("web_events", {**GOOD_WEB, "ts": "2026-10-01"}),
    ("web_events", {**GOOD_WEB, "ts": "2026-10-01 12:34:56"}),
    ("web_events", {**GOOD_WEB, "ts": "2026-10-01T12:34:56Z"}),
    ("web_events", {**GOOD_WEB, "ts": "01/10/2026"}),
    ("web_events", {**GOOD_WEB, "ts": "2026-02-30T00:00:00Z"}),
    ("web_events", {**GOOD_WEB, "ts": None}),
    ("web_events", {**GOOD_WEB, "event_id": "  "}),
    ("web_events", {**GOOD_WEB, "price": "19.99"}),
    ("web_events", {**GOOD_WEB, "price": "cheap"}),
    ("web_events", {**GOOD_WEB, "price": 3}),
    ("web_events", {**GOOD_WEB, "user": {"email": "ada at example.com"}}),
    ("web_events", {**GOOD_WEB, "user": {"email": "N/A"}}),
    ("web_events", {**GOOD_WEB, "user": {"email": "a@@b.com"}}),
    ("web_events", {**GOOD_WEB, "event_id": 42}),
    ("email_events", {"event_id": "e-1", "event_type": "open", "email": "ada@example.com",
                      "occurred_at": "2026-10-01T10:00:00Z"}),
    ("email_events", {"event_id": "e-2", "event_type": "open", "email": "ada at example.com",
                      "occurred_at": "2026-10-01T10:00:00Z"}),
    ("email_events", {"event_id": "e-3", "event_type": "open", "email": "",
                      "occurred_at": "not a time"}),
]


def test_row_validator_gives_the_spark_validators_reasons(spark):
    from pyspark.sql import functions as F

    from lakecdp.ingest.validate import parse_and_validate

    sources = {n: as_json_messages(s) for n, s in load_sources(REPO_ROOT / "conf").items()
               if n in ("web_events", "email_events")}
    for name in sources:
        cases = [(i, e) for i, (n, e) in enumerate(CASES) if n == name]
        raw = spark.createDataFrame([(json.dumps(e), i) for i, e in cases], "raw string, line bigint")
        checked = parse_and_validate(raw, sources[name]).select(
            "line", F.array_sort("_reasons").alias("reasons"), F.array_sort("_warnings").alias("warnings")
        ).collect()
        oracle = {r["line"]: (list(r["reasons"]), list(r["warnings"])) for r in checked}
        for i, event in cases:
            problems = validate_event(event, sources[name])
            ours = (sorted({p.code for p in problems if p.refuses}), sorted({p.code for p in problems if not p.refuses}))
            assert ours == oracle[i], f"case {i} {event}: ours {ours}, Spark {oracle[i]}"
