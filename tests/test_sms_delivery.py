"""The SMS destination end to end on real Delta tables and a real HTTP receiver on 127.0.0.1:
SMS consent as its own consent, quiet hours deferred (not dropped), suppression through the
identity graph, the length check, exactly once per change."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
from deltalake import DeltaTable as RsDeltaTable

from lakecdp.activation import job
from tests.support.fault_server import FaultServer
from lakecdp.context import JobContext
from lakecdp.tables import Tables

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
T1 = datetime(2026, 10, 20, tzinfo=timezone.utc)
# 2 Nov 2026 (US clocks went back on 1 Nov): 11:00 UTC is 11:00 in London, 06:00 in New York
MORNING = datetime(2026, 11, 2, 11, 0, tzinfo=timezone.utc)
# 15:00 UTC is 10:00 in New York
LATER = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)

RECORDS = (
    "record_id string, source string, email string, phone string, email_consent boolean, "
    "updated_at timestamp, sms_consent boolean"
)
PROFILE = (
    "customer_id string, first_name string, last_name string, email string, phone string, "
    "date_of_birth date, postcode string, city string, country string, email_consent boolean, "
    "emails array<string>, phones array<string>, updated_at timestamp"
)
CHANGES = (
    "change_id string, run_id string, segment_id string, customer_id string, member_key string, "
    "change_type string, previous_customer_id string, changed_at timestamp, reason string"
)


def _write_inputs(spark, tables: Tables) -> None:
    tables.append(
        spark.createDataFrame(
            [
                # Ann: SMS consent on her shop account; her old CRM record says nothing about SMS
                ("crm:1", "crm", "ann.old@example.com", None, True, T0, None),
                ("shop:1", "shop_customers", "ann@example.com", "+447700900001", True, T1, True),
                # Bob said yes, later no: the most recent record that says something wins
                ("shop:2", "shop_customers", "bob@example.com", "+447700900002", True, T0, True),
                ("crm:2", "crm", "bob@example.com", None, True, T1, False),
                ("shop:3", "shop_customers", "cara@example.com", "+12025550103", True, T0, True),
                ("shop:4", "shop_customers", "dan@example.com", None, True, T0, True),
                # Eve consented, but her linked old email unsubscribed (suppressed through the graph)
                ("shop:5", "shop_customers", "eve@example.com", "+447700900005", True, T1, True),
                ("crm:5", "crm", "eve.old@example.com", None, True, T0, None),
                ("shop:6", "shop_customers", "fay@example.com", "+447700900006", True, T0, True),
                # Gil's records never mention SMS: no consent
                ("crm:7", "crm", "gil@example.com", "+447700900007", True, T0, None),
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
                ("shop:2", "c2"),
                ("crm:2", "c2"),
                ("shop:3", "c3"),
                ("shop:4", "c4"),
                ("shop:5", "c5"),
                ("crm:5", "c5"),
                ("shop:6", "c6"),
                ("crm:7", "c7"),
            ],
            "record_id string, customer_id string",
        ),
        "identity.id_map",
    )

    def person(cid, first, email, phone, country, emails):
        return (cid, first, "X", email, phone, None, None, None, country, True, emails, [phone] if phone else [], T1)

    tables.append(
        spark.createDataFrame(
            [
                person(
                    "c1", "Ann", "ann@example.com", "+447700900001", "GB", ["ann@example.com", "ann.old@example.com"]
                ),
                person("c2", "Bob", "bob@example.com", "+447700900002", "GB", ["bob@example.com"]),
                person("c3", "Cara", "cara@example.com", "+12025550103", "US", ["cara@example.com"]),
                person("c4", "Dan", "dan@example.com", None, "GB", ["dan@example.com"]),
                person(
                    "c5", "Eve", "eve@example.com", "+447700900005", "GB", ["eve@example.com", "eve.old@example.com"]
                ),
                person("c6", "F" * 400, "fay@example.com", "+447700900006", "GB", ["fay@example.com"]),
                person("c7", "Gil", "gil@example.com", "+447700900007", "GB", ["gil@example.com"]),
            ],
            PROFILE,
        ),
        "gold.customer_profile",
    )
    tables.append(
        spark.createDataFrame(
            [
                ("e1", "email_unsubscribe", T0, "eve.old@example.com", None),
            ],
            "event_id string, event_type string, occurred_at timestamp, email string, bounce_type string",
        ),
        "silver.events",
    )
    tables.append(
        spark.createDataFrame(
            [(f"ch{n}", "seg-r1", "vip", f"c{n}", "", "entered", None, T1, "{}") for n in range(1, 8)]
            + [("ch9", "seg-r1", "vip", "c1", "", "exited", None, T1, "{}")],  # exits are not texted
            CHANGES,
        ),
        "segments.changes",
    )
    tables.append(
        spark.createDataFrame(
            [("vip", "c1", "", True)], "segment_id string, customer_id string, member_key string, is_current boolean"
        ),
        "segments.membership",
    )


def _project(project, tmp_path):
    conf = tmp_path / "conf"
    (conf / "destinations").mkdir(parents=True)
    shutil.copy(REPO / "conf" / "personalization.yaml", conf / "personalization.yaml")
    (conf / "privacy.yaml").write_text("version: 1\n", encoding="utf-8")
    (conf / "destinations" / "text.yaml").write_text(
        "version: 1\ntype: sms\nsegments: [vip]\ntemplate: welcome.sms.txt\nmax_segments: 2\n"
        "gateway: {url: '${TEST_SMS_URL}', allow_private_network: true, batch_size: 10, timeout_seconds: 5,\n"
        "          retry: {max_attempts: 2, base_delay_seconds: 0.01, max_runs: 2}}\n",
        encoding="utf-8",
    )
    shutil.copytree(REPO / "templates", project.root / "templates")
    return project.model_copy(update={"conf_dir": conf})


def _rows(tables, name, *columns):
    table = RsDeltaTable(tables.location(name)).to_pyarrow_table().to_pylist()
    return sorted((tuple(r[c] for c in columns) for r in table), key=repr)


@pytest.mark.slow
def test_consent_quiet_hours_suppression_length_and_exactly_once(spark, project, tmp_path, monkeypatch):
    project = _project(project, tmp_path)
    tables = Tables(project)
    _write_inputs(spark, tables)

    with FaultServer() as server:
        monkeypatch.setenv("TEST_SMS_URL", server.url)
        # the send time comes from the environment (as the demo and the tests pin it); the later
        # runs pass theirs to run()
        sending = project.model_copy(
            update={"environment": project.environment.model_copy(update={"send_time": MORNING})}
        )
        counts = job.run(JobContext.create(sending, spark, run_id="sms-1"))
        server.wait_idle()
        # Ann only: Cara is asleep in New York, everybody else may not be texted
        assert [item for request in server.received for item in request["items"]] == [
            {
                "idempotency_key": "b63f279c31b978fcfafeda0cbb691615489232974c00de6a8eb35b3850427f66",
                "change_id": "ch1",
                "segment_id": "vip",
                "customer_id": "c1",
                "to": "+447700900001",
                "text": "Hi Ann, thanks for being with us.\nAs a VIP you get free delivery on every order.\n"
                "Reply STOP to opt out",
                "encoding": "GSM-7",
                "sms_segments": 1,
            }
        ]
        assert counts == {
            "delivered": 1,
            "text.delivered": 1,
            "suppressed": 4,
            "text.suppressed": 4,  # Eve (graph), Bob and Gil (consent), Dan (phone)
            "no_sms_consent": 2,
            "text.no_sms_consent": 2,
            "no_phone": 1,
            "text.no_phone": 1,
            "deferred": 1,
            "text.deferred": 1,
            "rejected": 1,
            "text.rejected": 1,
        }
        assert _rows(tables, "activation.deliveries", "change_id", "status", "run_id") == [
            ("ch1", "delivered", "sms-1"),
            ("ch2", "suppressed", "sms-1"),
            ("ch4", "suppressed", "sms-1"),
            ("ch5", "suppressed", "sms-1"),
            ("ch7", "suppressed", "sms-1"),
        ]
        # "Hi " + 400 F + ", thanks for being with us." + "\n" + "Reply STOP to opt out" = 3+400+27+1+21
        assert _rows(tables, "activation.rejected", "change_id", "reason") == [
            ("ch6", "message needs 3 GSM-7 segments (452 units), max_segments is 2")
        ]

        # later that day Cara's deferred message goes; Ann's is not sent again; Fay fails for good
        counts = job.run(JobContext.create(project, spark, run_id="sms-2"), now=LATER)
        server.wait_idle()
        second = [item for request in server.received[1:] for item in request["items"]]
        assert [(i["change_id"], i["to"], i["text"]) for i in second] == [
            ("ch3", "+12025550103", "Hi Cara, thanks for being with us.\nReply STOP to opt out")
        ]
        assert counts == {"delivered": 1, "text.delivered": 1, "dead_letter": 1, "text.dead_letter": 1}

        # a third run has nothing left to send
        counts = job.run(JobContext.create(project, spark, run_id="sms-3"), now=LATER)
        server.wait_idle()
        assert counts == {"delivered": 0}
        assert len(server.received) == 2
        assert sorted(server.processed.values()) == [1, 1]

    assert _rows(tables, "activation.deliveries", "change_id", "status", "run_id") == [
        ("ch1", "delivered", "sms-1"),
        ("ch2", "suppressed", "sms-1"),
        ("ch3", "delivered", "sms-2"),
        ("ch4", "suppressed", "sms-1"),
        ("ch5", "suppressed", "sms-1"),
        ("ch7", "suppressed", "sms-1"),
    ]
    assert [(c, r.split(";")[0]) for c, r in _rows(tables, "activation.dead_letter", "change_id", "reason")] == [
        ("ch6", "rejected by the destination in 2 of 2 allowed runs (retry.max_runs), not sent again")
    ]
    dead_payload = json.loads(_rows(tables, "activation.dead_letter", "payload")[0][0])
    assert dead_payload == {"idempotency_key": dead_payload["idempotency_key"], "change_id": "ch6", "customer_id": "c6"}
