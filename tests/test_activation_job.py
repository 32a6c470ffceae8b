"""The activation step end to end on hand-made Delta tables: suppression through the identity
graph in every destination, a crash half way and the resume, and a no-op re-run."""

from __future__ import annotations

import csv
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from deltalake import DeltaTable as RsDeltaTable

from lakecdp.activation import job
from tests.support.fault_server import FaultServer
from lakecdp.activation.webhook import WebhookClient
from lakecdp.context import JobContext
from lakecdp.tables import Tables
from conftest import on_engine


T0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
T1 = datetime(2026, 10, 20, tzinfo=timezone.utc)

RECORDS = "record_id string, source string, email string, phone string, email_consent boolean, updated_at timestamp"
PROFILE = (
    "customer_id string, first_name string, last_name string, email string, phone string, "
    "date_of_birth date, postcode string, city string, country string, email_consent boolean, "
    "emails array<string>, phones array<string>, updated_at timestamp"
)
CHANGES = (
    "change_id string, run_id string, segment_id string, customer_id string, member_key string, "
    "change_type string, previous_customer_id string, changed_at timestamp, reason string"
)
EVENTS = "event_id string, event_type string, occurred_at timestamp, email string, bounce_type string"


def _on_engine(project, engine: str):
    """``project`` with ``engine`` (embedded: the ledger and table checks go through delta-rs)."""
    return on_engine(project, engine)


def _write_inputs(spark, tables: Tables) -> None:
    # c1 = Ann: her old CRM record has ann.old@ (which unsubscribed); her profile only shows ann@
    tables.append(
        spark.createDataFrame(
            [
                ("crm:1", "crm", "ann.old@example.com", None, True, T0),
                ("shop:1", "shop_customers", "ann@example.com", "+447700900001", True, T1),
                ("crm:2", "crm", "bob@example.com", None, False, T0),
                ("crm:3", "crm", "cara@example.com", "+447700900003", True, T0),
                ("crm:4", "crm", "dan@example.com", None, True, T0),
                ("crm:5", "crm", "eve@example.com", None, True, T0),
                ("crm:6", "crm", "fay@example.com", None, True, T0),
            ],
            RECORDS,
        ),
        "silver.customer_records",
    )
    tables.append(
        spark.createDataFrame(
            [
                ("crm:1", "c1"),
                ("shop:1", "c1"),
                ("crm:2", "c2"),
                ("crm:3", "c3"),
                ("crm:4", "c4"),
                ("crm:5", "c5"),
                ("crm:6", "c6"),
            ],
            "record_id string, customer_id string",
        ),
        "identity.id_map",
    )
    tables.append(
        spark.createDataFrame(
            [
                (
                    "c1",
                    "Ann",
                    "Lee",
                    "ann@example.com",
                    "+447700900001",
                    None,
                    None,
                    None,
                    "GB",
                    True,
                    ["ann@example.com"],
                    ["+447700900001"],
                    T1,
                ),
                (
                    "c2",
                    "Bob",
                    "Ray",
                    "bob@example.com",
                    None,
                    None,
                    None,
                    None,
                    "GB",
                    False,
                    ["bob@example.com"],
                    [],
                    T0,
                ),
                (
                    "c3",
                    "=cmd|' /C calc'!A0",
                    "Kay",
                    "cara@example.com",
                    "+447700900003",
                    date(1990, 1, 2),
                    None,
                    None,
                    "GB",
                    True,
                    ["cara@example.com"],
                    ["+447700900003"],
                    T0,
                ),
                (
                    "c4",
                    "Dan",
                    "Fox",
                    "dan@example.com",
                    None,
                    None,
                    None,
                    None,
                    "GB",
                    True,
                    ["dan@example.com"],
                    [],
                    T0,
                ),
                ("c5", "Eve", "Ng", "eve@example.com", None, None, None, None, "GB", None, ["eve@example.com"], [], T0),
                (
                    "c6",
                    "Fay",
                    "Orr",
                    "fay@example.com",
                    None,
                    None,
                    None,
                    None,
                    "GB",
                    True,
                    ["fay@example.com"],
                    [],
                    T0,
                ),
            ],
            PROFILE,
        ),
        "gold.customer_profile",
    )
    tables.append(
        spark.createDataFrame(
            [
                ("e1", "email_unsubscribe", T0, " ANN.OLD@example.com ", None),
                ("e2", "email_bounce", T0, "dan@example.com", "soft"),  # soft bounce: not suppressed
                ("e3", "email_bounce", T0, "ghost@example.com", "hard"),  # nobody we know
                ("e4", "email_open", T0, "cara@example.com", None),
            ],
            EVENTS,
        ),
        "silver.events",
    )
    tables.append(
        spark.createDataFrame(
            [(f"ch{n}", "seg-r1", "vip", f"c{n}", "", "entered", None, T1, "{}") for n in range(1, 7)]
            + [("ch9", "seg-r1", "lapsed", "c4", "", "entered", None, T1, "{}")],
            CHANGES,
        ),
        "segments.changes",
    )
    # Fay asked to be erased: only the salted hash of her email is kept,
    # sha256("test-salt\0email\0fay@example.com") per lakecdp.erasure.salted_hash
    tables.append(
        spark.createDataFrame(
            [
                ("7e0678968487a242a7d1d3ad18c43128260539f437746f55d3a27c20079ee38b", "email", T0, "erase-1"),
            ],
            "salted_hash string, identifier_type string, requested_at timestamp, run_id string",
        ),
        "ops.erasures",
    )
    # the segments step holds 'lapsed' of run seg-r1 for approval
    tables.append(
        spark.createDataFrame([("seg-r1", "lapsed", "held")], "run_id string, segment_id string, status string"),
        "segments.approvals",
    )


def _write_conf(root, url_env: str) -> None:
    folder = root / "destinations"
    folder.mkdir(parents=True)
    (root / "privacy.yaml").write_text("version: 1\n", encoding="utf-8")
    (folder / "export.yaml").write_text(
        "version: 1\ntype: file\nformat: csv\nfields: [email, first_name]\n", encoding="utf-8"
    )
    (folder / "hook.yaml").write_text(
        "version: 1\ntype: webhook\nurl: ${" + url_env + "}\nbatch_size: 1\nsegments: [vip]\n"
        "fields: [email, first_name]\ntimeout_seconds: 2\nallow_private_network: true\n"
        "retry: {max_attempts: 3, base_delay_seconds: 0.01, max_runs: 1}\n",
        encoding="utf-8",
    )
    (folder / "ads.yaml").write_text(
        "version: 1\ntype: hashed_audience\nsegments: [vip]\nchange_types: [entered]\n", encoding="utf-8"
    )


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["spark", "embedded"])
def test_suppression_crash_resume_and_rerun(spark, project, tmp_path, monkeypatch, engine):
    conf = tmp_path / "conf"
    _write_conf(conf, "TEST_HOOK_URL")
    project = _on_engine(project, engine).model_copy(update={"conf_dir": conf})
    tables = Tables(project)
    _write_inputs(spark, tables)

    monkeypatch.setenv("LAKECDP_ERASURE_SALT", "test-salt")
    with FaultServer(reject_rows={"c5"}) as server:
        monkeypatch.setenv("TEST_HOOK_URL", server.url)

        # run 1 crashes before the webhook's second request (after c3 was sent and ledgered)
        real_request = WebhookClient._request
        calls = {"n": 0}

        def crash_on_second(self, body, key):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("simulated crash")
            return real_request(self, body, key)

        monkeypatch.setattr(WebhookClient, "_request", crash_on_second)
        with pytest.raises(RuntimeError, match="simulated crash"):
            job.run(JobContext.create(project, spark, run_id="act-1"))
        monkeypatch.setattr(WebhookClient, "_request", real_request)
        built = RsDeltaTable(tables.location("activation.suppressions")).version()

        # run 2 resumes: only what run 1 did not finish
        resumed = job.run(JobContext.create(project, spark, run_id="act-2"))
        # run 3: nothing left to do
        again = job.run(JobContext.create(project, spark, run_id="act-3"))
        received_after_resume = list(server.received)

    # max_runs 1: a change the destination rejects is dead-lettered at once, not tried again
    assert resumed == {"delivered": 1, "hook.delivered": 1, "dead_letter": 1, "hook.dead_letter": 1}
    assert again == {"delivered": 0}

    # the webhook got c3, c4, c5 once each; never Ann (unsubscribed via her other email),
    # Bob (no consent) nor Fay (erased); c5 was rejected per row and not retried
    assert [
        [(i["change_id"], i["customer_id"], i["email"], i["first_name"]) for i in r["items"]]
        for r in received_after_resume
    ] == [
        [("ch3", "c3", "cara@example.com", "=cmd|' /C calc'!A0")],
        [("ch4", "c4", "dan@example.com", "Dan")],
        [("ch5", "c5", "eve@example.com", "Eve")],
    ]
    # sha256("hook\x1fch3"), sent as header and in the item
    assert received_after_resume[0]["idempotency_key"] == (
        "3d04a8010b2e8cbcb3960429a9b6f2e817f167ac67dc7d95ad6deffeeab692c1"
    )
    assert received_after_resume[0]["items"][0]["idempotency_key"] == received_after_resume[0]["idempotency_key"]
    assert sorted(server.processed.values()) == [1, 1]

    # the CSV export: vip of segment run seg-r1, Ann and Bob suppressed, the formula escaped;
    # 'lapsed' is held for approval so it has no file
    export = project.warehouse / "exports" / "export"
    assert sorted(p.relative_to(export).as_posix() for p in export.rglob("*.csv")) == ["vip/seg-r1.csv"]
    with (export / "vip" / "seg-r1.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["change_id"], r["customer_id"], r["email"], r["first_name"], r["changed_at"]) for r in rows] == [
        ("ch3", "c3", "cara@example.com", "'=cmd|' /C calc'!A0", "2026-10-20T00:00:00+00:00"),
        ("ch4", "c4", "dan@example.com", "Dan", "2026-10-20T00:00:00+00:00"),
        ("ch5", "c5", "eve@example.com", "Eve", "2026-10-20T00:00:00+00:00"),
    ]
    # the hashed audience: sha256 of normalised email / E.164 phone, nobody suppressed in it
    with (project.warehouse / "exports" / "ads" / "vip" / "seg-r1.csv").open(encoding="utf-8") as handle:
        hashed = [(r["change_id"], r["email_sha256"], r["phone_sha256"]) for r in csv.DictReader(handle)]
    assert hashed == [
        (
            "ch3",
            "24be2d6c78146d33cf14c9a06a4721a73d63014fecb5c16f030a0372c825c71f",
            "98bea9e540c0f1fc61147d172d3d56500eae759b86bc43eab66c251144c4b8ea",
        ),
        ("ch4", "c8cf6521c193fc743c7fadcd8be04e983724764efa65b3c3913b6d22f086a11f", ""),
        ("ch5", "d0574c4966d2c326193622feebc64991c5b59807ae68fa8255b26c79f4bf917a", ""),
    ]
    for path in (project.warehouse / "exports").rglob("*.csv"):
        text = path.read_text(encoding="utf-8")
        assert "ann" not in text and "bob" not in text and "fay" not in text

    # the ledger, read by an independent reader (delta-rs): one row per (destination, change)
    def rows(name, *columns):
        table = RsDeltaTable(tables.location(name)).to_pyarrow_table().to_pylist()
        return sorted((tuple(r[c] for c in columns) for r in table), key=repr)

    assert rows("activation.deliveries", "destination", "change_id", "status", "run_id") == [
        ("ads", "ch1", "suppressed", "act-1"),
        ("ads", "ch2", "suppressed", "act-1"),
        ("ads", "ch3", "delivered", "act-1"),
        ("ads", "ch4", "delivered", "act-1"),
        ("ads", "ch5", "delivered", "act-1"),
        ("ads", "ch6", "suppressed", "act-1"),
        ("export", "ch1", "suppressed", "act-1"),
        ("export", "ch2", "suppressed", "act-1"),
        ("export", "ch3", "delivered", "act-1"),
        ("export", "ch4", "delivered", "act-1"),
        ("export", "ch5", "delivered", "act-1"),
        ("export", "ch6", "suppressed", "act-1"),
        ("hook", "ch1", "suppressed", "act-1"),
        ("hook", "ch2", "suppressed", "act-1"),
        ("hook", "ch3", "delivered", "act-1"),
        ("hook", "ch4", "delivered", "act-2"),
        ("hook", "ch6", "suppressed", "act-1"),
    ]
    assert not Path(tables.location("activation.rejected")).exists()
    assert rows("activation.dead_letter", "destination", "change_id", "reason", "response_code") == [
        (
            "hook",
            "ch5",
            "rejected by the destination in 1 of 1 allowed runs (retry.max_runs), not sent again; last: invalid email",
            200,
        )
    ]
    # built once by run 1 (Spark: one commit; delta-rs: create, then the rows); runs 2 and 3
    # found the same input versions and left it alone
    assert built == {"spark": 0, "embedded": 1}[engine]
    assert RsDeltaTable(tables.location("activation.suppressions")).version() == built
    assert rows(
        "activation.suppressions", "customer_id", "reason", "identifier_type", "identifier_value", "since"
    ) == sorted(
        [
            ("c1", "unsubscribed", "email", "ann.old@example.com", T0),
            ("c1", "unsubscribed", "email", "ann@example.com", T0),
            ("c1", "unsubscribed", "phone", "+447700900001", T0),
            ("c2", "no_consent", "email", "bob@example.com", T0),
            ("c6", "erased", "email", "fay@example.com", T0),
            (None, "hard_bounce", "email", "ghost@example.com", T0),
        ],
        key=repr,
    )


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["spark", "embedded"])
def test_rejected_changes_are_retried_by_later_runs_up_to_max_runs(spark, project, tmp_path, monkeypatch, engine):
    """Run 1: the destination rejects c2 and c3. Run 2: it takes c2 now, still rejects c3, which
    has used its 2 runs (retry.max_runs) and is dead-lettered. Run 3 sends nothing."""
    conf = tmp_path / "conf"
    (conf / "destinations").mkdir(parents=True)
    (conf / "privacy.yaml").write_text("version: 1\n", encoding="utf-8")
    (conf / "destinations" / "hook.yaml").write_text(
        "version: 1\ntype: webhook\nurl: ${RETRY_HOOK_URL}\nallow_private_network: true\nbatch_size: 10\n"
        "fields: [email]\ntimeout_seconds: 2\nretry: {max_attempts: 2, base_delay_seconds: 0.01, max_runs: 2}\n",
        encoding="utf-8",
    )
    project = _on_engine(project, engine).model_copy(update={"conf_dir": conf})
    tables = Tables(project)
    tables.append(
        spark.createDataFrame(
            [(f"ch{n}", "seg-r1", "vip", f"c{n}", "", "entered", None, T1, "{}") for n in (1, 2, 3)],
            CHANGES,
        ),
        "segments.changes",
    )
    tables.append(
        spark.createDataFrame(
            [
                (
                    f"c{n}",
                    f"N{n}",
                    "X",
                    f"p{n}@example.com",
                    None,
                    None,
                    None,
                    None,
                    "GB",
                    True,
                    [f"p{n}@example.com"],
                    [],
                    T0,
                )
                for n in (1, 2, 3)
            ],
            PROFILE,
        ),
        "gold.customer_profile",
    )

    with FaultServer(reject_rows={"c2", "c3"}) as server:
        monkeypatch.setenv("RETRY_HOOK_URL", server.url)
        first = job.run(JobContext.create(project, spark, run_id="act-1"))
        server.reject_rows = {"c3"}
        second = job.run(JobContext.create(project, spark, run_id="act-2"))
        third = job.run(JobContext.create(project, spark, run_id="act-3"))
        sent = [[i["customer_id"] for i in r["items"]] for r in server.received]

    assert first == {"delivered": 1, "hook.delivered": 1, "rejected": 2, "hook.rejected": 2}
    assert second == {"delivered": 1, "hook.delivered": 1, "dead_letter": 1, "hook.dead_letter": 1}
    assert third == {"delivered": 0}
    # run 2 sent only the two rejected changes again; run 3 sent nothing
    assert sent == [["c1", "c2", "c3"], ["c2", "c3"]]
    # each change accepted exactly once, c3 never
    assert sorted(server.processed.values()) == [1, 1]
    assert sorted(i["customer_id"] for i in server.accepted_items.values()) == ["c1", "c2"]

    def rows(name, *columns):
        table = RsDeltaTable(tables.location(name)).to_pyarrow_table().to_pylist()
        return sorted((tuple(r[c] for c in columns) for r in table), key=repr)

    assert rows("activation.deliveries", "change_id", "status", "run_id") == [
        ("ch1", "delivered", "act-1"),
        ("ch2", "delivered", "act-2"),
    ]
    assert rows("activation.rejected", "change_id", "reason", "run_id") == [
        ("ch2", "invalid email", "act-1"),
        ("ch3", "invalid email", "act-1"),
    ]
    assert rows("activation.dead_letter", "change_id", "reason", "run_id") == [
        (
            "ch3",
            "rejected by the destination in 2 of 2 allowed runs (retry.max_runs), not sent again; last: invalid email",
            "act-2",
        ),
    ]
