"""docs/extending.md followed once per registry: a segment kind, a destination type and a
source format written as test-only plugins (tests/kind_plugins/), registered from the test,
loaded by the real config loaders and run through the real evaluation, activation and ingest.

Every expected row is written out by hand from the inputs next to it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from kind_plugins.customer_list import CustomerList
from kind_plugins.jsonl_log import JsonlLogDestination
from kind_plugins.logfmt import LogfmtFormat
from pyspark.testing import assertDataFrameEqual

from lakecdp.activation import job as activation
from lakecdp.activation.config import DESTINATION_TYPES, load_destinations
from lakecdp.config import ConfigError
from lakecdp.context import JobContext
from lakecdp.ingest.formats import SOURCE_FORMATS
from lakecdp.ingest.job import ingest
from lakecdp.ingest.sources import load_sources
from lakecdp.segments.definitions import load_segments
from lakecdp.segments.evaluate import SegmentInputs, evaluate_segments
from lakecdp.segments.kinds import SEGMENT_KINDS
from lakecdp.tables import Tables

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# -- a segment kind ------------------------------------------------------------------------
BETA = "version: 1\nid: beta_testers\ncustomer_list: {customer_ids: [c1, c3, c9]}\nschedule: {every_minutes: 60}\n"
# a built-in kind next to it, excluding the plugin's segment: the policies see both
BIG_SPENDERS = (
    "version: 1\nid: big_spenders\ncondition: total_spent > 100\nexclude: [beta_testers]\n"
    "schedule: {every_minutes: 60}\n"
)


@pytest.fixture
def customer_list_kind(monkeypatch):
    monkeypatch.setitem(SEGMENT_KINDS, CustomerList.key, CustomerList)  # the registry line


def test_an_unregistered_segment_kind_is_an_error_naming_file_and_key(tmp_path):
    _write(tmp_path / "beta_testers.yaml", BETA)
    with pytest.raises(ConfigError) as error:
        load_segments(tmp_path)
    assert str(error.value) == (
        f"{tmp_path / 'beta_testers.yaml'}: <root>: Value error, give exactly one of condition, query or event "
        "(got none); customer_list: Extra inputs are not permitted"
    )


def test_a_registered_segment_kind_loads_and_its_errors_name_file_and_field(tmp_path, customer_list_kind):
    _write(tmp_path / "beta_testers.yaml", BETA)
    segment = load_segments(tmp_path)["beta_testers"]
    assert (segment.kind, segment.rule, segment.guarded) == ("customer_list", "listed: c1,c3,c9", None)
    _write(tmp_path / "beta_testers.yaml", BETA.replace("[c1, c3, c9]", "[]"))
    with pytest.raises(ConfigError) as error:
        load_segments(tmp_path)
    assert str(error.value) == (
        f"{tmp_path / 'beta_testers.yaml'}: customer_list.customer_ids: "
        "List should have at least 1 item after validation, not 0"
    )
    both = "version: 1\nid: beta_testers\ncondition: total_spent > 1\ncustomer_list: {customer_ids: [c1]}\n"
    _write(tmp_path / "beta_testers.yaml", both + "schedule: {every_minutes: 60}\n")
    with pytest.raises(
        ConfigError,
        match=r"give exactly one of condition, query, event or customer_list "
        r"\(got \['condition', 'customer_list'\]\)",
    ):
        load_segments(tmp_path)


def test_a_plugin_segment_kind_is_evaluated_with_the_built_in_ones(spark, tmp_path, customer_list_kind):
    _write(tmp_path / "beta_testers.yaml", BETA)
    _write(tmp_path / "big_spenders.yaml", BIG_SPENDERS)
    segments = load_segments(tmp_path)
    profile = spark.createDataFrame(
        [("c1", "Ann"), ("c2", "Bob"), ("c3", "Cy"), ("c4", "Dee")], "customer_id string, first_name string"
    )
    features = spark.createDataFrame(
        [("c1", 500.0), ("c2", 50.0), ("c3", 20.0), ("c4", 300.0)], "customer_id string, total_spent double"
    )
    events = spark.createDataFrame(
        [],
        "event_id string, event_type string, occurred_at timestamp, "
        "customer_id string, product_id string, category string, value double",
    )
    candidates = evaluate_segments(spark, segments, SegmentInputs(profile, features, events, AS_OF))
    assertDataFrameEqual(
        candidates.select("segment_id", "customer_id", "status", "reason"),
        [
            # c9 is listed but unknown: no row
            ("beta_testers", "c1", "member", '{"rule":"listed: c1,c3,c9","values":{"listed":true}}'),
            ("beta_testers", "c3", "member", '{"rule":"listed: c1,c3,c9","values":{"listed":true}}'),
            # c1 spends 500 but is a beta tester: excluded; c4 (300) stays
            ("big_spenders", "c1", "excluded", '{"rule":"total_spent > 100","values":{"total_spent":500.0}}'),
            ("big_spenders", "c4", "member", '{"rule":"total_spent > 100","values":{"total_spent":300.0}}'),
        ],
    )


# -- a destination type --------------------------------------------------------------------
PROFILE = (
    "customer_id string, first_name string, last_name string, email string, phone string, "
    "date_of_birth date, postcode string, city string, country string, email_consent boolean, "
    "emails array<string>, phones array<string>, updated_at timestamp"
)
CHANGES = (
    "change_id string, run_id string, segment_id string, customer_id string, member_key string, "
    "change_type string, previous_customer_id string, changed_at timestamp, reason string"
)


# two real activation runs (~45 s under load): full suite only
@pytest.mark.slow
def test_a_plugin_destination_type_is_delivered_by_the_real_activation_exactly_once(
    spark, project, tmp_path, monkeypatch
):
    out = tmp_path / "out" / "changes.jsonl"
    conf = tmp_path / "conf"
    _write(conf / "privacy.yaml", "version: 1\n")
    _write(
        conf / "destinations" / "audit_log.yaml",
        f"version: 1\ntype: jsonl_log\nfile: {out}\nsegments: [beta_testers]\n",
    )
    with pytest.raises(ConfigError) as error:
        load_destinations(conf)
    assert str(error.value).startswith(
        f"{conf / 'destinations' / 'audit_log.yaml'}: <root>: Input tag 'jsonl_log' "
        "found using 'type' does not match any of the expected tags: 'file'"
    )

    monkeypatch.setitem(DESTINATION_TYPES, "jsonl_log", JsonlLogDestination)  # the registry line
    project = project.model_copy(update={"conf_dir": conf})
    tables = Tables(project)
    out.parent.mkdir()
    t1 = datetime(2026, 10, 20, tzinfo=timezone.utc)
    tables.append(
        spark.createDataFrame(
            [
                (
                    c,
                    name,
                    "X",
                    f"{name.lower()}@example.com",
                    None,
                    None,
                    None,
                    None,
                    "GB",
                    True,
                    [f"{name.lower()}@example.com"],
                    [],
                    t1,
                )
                for c, name in (("c1", "Ann"), ("c2", "Bob"))
            ],
            PROFILE,
        ),
        "gold.customer_profile",
    )
    tables.append(
        spark.createDataFrame(
            [
                ("ch1", "seg-r1", "beta_testers", "c1", "", "entered", None, t1, "{}"),
                ("ch2", "seg-r1", "vip", "c2", "", "entered", None, t1, "{}"),  # not this destination's segment
                ("ch3", "seg-r1", "beta_testers", "c2", "", "entered", None, t1, "{}"),
            ],
            CHANGES,
        ),
        "segments.changes",
    )

    counts = activation.run(JobContext.create(project, spark, run_id="act-1", as_of=AS_OF))
    assert (counts["delivered"], counts["audit_log.delivered"]) == (2, 2)
    expected = [
        {
            "destination": "audit_log",
            "segment_id": "beta_testers",
            "customer_id": "c1",
            "change_type": "entered",
            "email": "ann@example.com",
        },
        {
            "destination": "audit_log",
            "segment_id": "beta_testers",
            "customer_id": "c2",
            "change_type": "entered",
            "email": "bob@example.com",
        },
    ]
    assert [json.loads(line) for line in out.read_text("utf-8").splitlines()] == expected
    ledger = tables.read(spark, "activation.deliveries").select("destination", "change_id", "status")
    assertDataFrameEqual(ledger, [("audit_log", "ch1", "delivered"), ("audit_log", "ch3", "delivered")])

    # the ledger the plugin wrote: a second run sends nothing again
    again = activation.run(JobContext.create(project, spark, run_id="act-2", as_of=AS_OF))
    assert again == {"delivered": 0}
    assert [json.loads(line) for line in out.read_text("utf-8").splitlines()] == expected


# -- a source format -----------------------------------------------------------------------
APP_EVENTS = """version: 1
name: app_events
format: logfmt
path: app_events/*.log
columns:
  - {name: id}
  - {name: kind}
  - {name: at, type: timestamp}
  - {name: email}
  - {name: amount, type: double}
primary_key: [id]
event_time: at
target: events
required: [id, kind, at]
checks:
  email: {email: true}
drop_existing_keys: true
mapping:
  event_id: id
  event_type: kind
  occurred_at: at
  email: email
  value: amount
  channel: "'app'"
identifiers: [email]
"""


# ~31 s in make test on a loaded box (two workers): the full suite's tier
@pytest.mark.slow
def test_a_plugin_source_format_is_ingested_by_the_real_ingest(spark, project, tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    _write(conf / "sources" / "app_events.yaml", APP_EVENTS)
    with pytest.raises(ConfigError) as error:
        load_sources(conf)
    assert str(error.value) == (
        f"{conf / 'sources' / 'app_events.yaml'}: format: Value error, unknown format "
        "'logfmt'; known: csv, jsonl, parquet"
    )

    monkeypatch.setitem(SOURCE_FORMATS, "logfmt", LogfmtFormat())  # the registry line
    project = project.model_copy(update={"conf_dir": conf})
    _write(
        project.landing / "app_events" / "2026-10-31.log",
        "\n".join(
            [
                "id=a1 kind=purchase at=2026-10-30T10:00:00Z email=ann@example.com amount=12.5",
                "id=a2 kind=page_view at=2026-10-31T08:00:00Z",
                "kind=login at=2026-10-31T09:00:00Z email=bob@example.com",  # no id: quarantined
                "id=a4 kind=login at=2026-10-31T09:30:00Z email=not-an-email",  # optional email checked: nulled
            ]
        )
        + "\n",
    )

    counts = ingest(JobContext.create(project, spark, run_id="ing-1", as_of=AS_OF), only=["app_events"])
    assert (counts["rows_read"], counts["rows_loaded"], counts["rows_quarantined"]) == (4, 3, 1)
    tables = Tables(project)
    assertDataFrameEqual(
        tables.read(spark, "silver.events").select(
            "event_id", "event_type", "occurred_at", "email", "value", "channel"
        ),
        [
            ("a1", "purchase", datetime(2026, 10, 30, 10), "ann@example.com", 12.5, "app"),
            ("a2", "page_view", datetime(2026, 10, 31, 8), None, None, "app"),
            ("a4", "login", datetime(2026, 10, 31, 9, 30), None, None, "app"),
        ],
    )
    assertDataFrameEqual(
        tables.read(spark, "quarantine.app_events").select("raw", "source_file", "line", "reasons"),
        [
            (
                "kind=login at=2026-10-31T09:00:00Z email=bob@example.com",
                "app_events/2026-10-31.log",
                3,
                ["MISSING_REQUIRED"],
            )
        ],
    )
