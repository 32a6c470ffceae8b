"""Webhook delivery against a real local HTTP server that injects faults (no Spark needed)."""

from __future__ import annotations

import csv
import json
import time
from datetime import datetime, timezone

import pytest

from lakecdp.activation.config import DestinationFile, WebhookSettings, load_destinations
from lakecdp.activation.files import escape_csv_cell, write_export
from lakecdp.activation.hashing import hash_email, hash_phone, normalise_email, normalise_phone
from tests.support.fault_server import FaultServer
from lakecdp.activation.webhook import WebhookClient, parse_retry_after
from lakecdp.config import ConfigError


def _items(*customer_ids: str) -> list[dict]:
    return [
        {
            "idempotency_key": f"k-{c}",
            "change_id": f"ch-{c}",
            "segment_id": "vip",
            "customer_id": c,
            "change_type": "entered",
        }
        for c in customer_ids
    ]


def _settings(url: str, **overrides) -> WebhookSettings:
    base = {
        "url": url,
        "allow_private_network": True,  # the test servers listen on 127.0.0.1
        "batch_size": 2,
        "timeout_seconds": 2.0,
        "retry": {"max_attempts": 4, "base_delay_seconds": 0.01, "max_delay_seconds": 0.05},
    }
    base.update(overrides)
    return WebhookSettings.model_validate(base)


def test_transient_faults_are_retried_and_each_change_is_accepted_once():
    # request order: batch1 -> 503, batch1 -> reset, batch1 -> ok, batch2 -> 429 (1s), batch2 -> ok,
    # batch3 -> slow (server accepts after the client gave up), batch3 -> ok (same idempotency key)
    script = ["503", "reset", "ok", "429:1", "ok", "slow:3.0", "ok"]
    with FaultServer(script) as server:
        client = WebhookClient("crm", _settings(server.url), run_id="r1")
        started = time.monotonic()
        result = client.deliver(_items("c1", "c2", "c3", "c4", "c5", "c6"))
        elapsed = time.monotonic() - started

    assert [(i["customer_id"], attempts) for i, attempts, _ in result.delivered] == [
        ("c1", 3),
        ("c2", 3),
        ("c3", 2),
        ("c4", 2),
        ("c5", 2),
        ("c6", 2),
    ]
    assert result.rejected == [] and result.dead == []
    assert [r["action"] for r in server.received] == script
    # Retry-After: 1 was honoured (the 429 came back before batch 2's second attempt)
    assert server.request_times[4] - server.request_times[3] >= 1.0
    assert elapsed >= 1.0
    # the server processed every change once, except the slow batch it processed after the
    # client had timed out: that one arrived twice with the same Idempotency-Key
    assert dict(server.processed) == {"k-c1": 1, "k-c2": 1, "k-c3": 1, "k-c4": 1, "k-c5": 2, "k-c6": 2}
    slow, retry = server.received[5], server.received[6]
    assert slow["idempotency_key"] == retry["idempotency_key"]
    assert [i["idempotency_key"] for i in retry["items"]] == ["k-c5", "k-c6"]


def test_row_rejects_bisection_and_dead_letter():
    # c3 is rejected per row in a 200 answer; c6 poisons any request it is in (400)
    with FaultServer(reject_rows={"c3"}, poison_rows={"c6"}) as server:
        client = WebhookClient("crm", _settings(server.url, batch_size=4), run_id="r1")
        seen = []
        result = client.deliver(
            _items("c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"), on_result=lambda r: seen.append(r)
        )

    assert sorted(i["customer_id"] for i, _, _ in result.delivered) == ["c1", "c2", "c4", "c5", "c7", "c8"]
    assert [(i["customer_id"], reason, code) for i, reason, code, _ in result.rejected] == [
        ("c3", "invalid email", 200),
        ("c6", 'HTTP 400: {"error": "invalid request"}', 400),
    ]
    # batch 2 [c5 c6 c7 c8] -> 400 -> [c5 c6] 400 -> [c5] ok, [c6] 400 -> [c7 c8] ok
    assert [[i["customer_id"] for i in r["items"]] for r in server.received] == [
        ["c1", "c2", "c3", "c4"],
        ["c5", "c6", "c7", "c8"],
        ["c5", "c6"],
        ["c5"],
        ["c6"],
        ["c7", "c8"],
    ]
    # rejects are not retried; accepted rows went through once
    assert dict(server.processed) == {"k-c1": 1, "k-c2": 1, "k-c4": 1, "k-c5": 1, "k-c7": 1, "k-c8": 1}
    # the ledger callback ran once per request that decided something (not for the split 400s)
    assert [len(r.delivered) + len(r.rejected) for r in seen] == [4, 1, 1, 2]


def test_gives_up_after_max_attempts_into_dead_letter():
    with FaultServer(["503"] * 10) as server:
        client = WebhookClient("crm", _settings(server.url, batch_size=5), run_id="r1")
        result = client.deliver(_items("c1", "c2"))
    assert len(server.received) == 4  # max_attempts
    assert [(i["customer_id"], code, attempts) for i, _, code, attempts in result.dead] == [
        ("c1", 503, 4),
        ("c2", 503, 4),
    ]
    assert result.dead[0][1] == 'gave up after 4 attempts; last: HTTP 503: {"error": "unavailable"}'
    assert server.processed == {}


def test_credentials_come_from_environment_and_rate_limit_spaces_requests(monkeypatch):
    monkeypatch.setenv("CRM_TOKEN", "s3cret")
    with FaultServer() as server:
        monkeypatch.setenv("HOOK_URL", server.url)
        settings = _settings(
            "${HOOK_URL}",
            batch_size=1,
            rate_limit_per_second=5,
            auth={"type": "bearer", "token_env": "CRM_TOKEN"},
            payload_template='{"items": {{ items | tojson }}, "source": "{{ destination }}"}',
        )
        client = WebhookClient("crm", settings, run_id="r1")
        started = time.monotonic()
        client.deliver(_items("c1", "c2", "c3"))
        elapsed = time.monotonic() - started
    assert [r["authorization"] for r in server.received] == ["Bearer s3cret"] * 3
    assert [r["idempotency_key"] for r in server.received] == ["k-c1", "k-c2", "k-c3"]
    assert elapsed >= 0.4  # 3 requests at 5 per second: two gaps of at least 0.2 s

    monkeypatch.delenv("CRM_TOKEN")
    with pytest.raises(ConfigError, match="destination crm: environment variable CRM_TOKEN is not set"):
        WebhookClient("crm", settings, run_id="r1")


def test_retry_after_parsing():
    now = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after("Sun, 01 Nov 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("garbage", now=now) is None
    assert parse_retry_after(None, now=now) is None


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=1+2", "'=1+2"),
        ("+44 7700 900123", "'+44 7700 900123"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("Ada", "Ada"),
        ("a=b", "a=b"),
        (5, 5),
        (None, None),
    ],
)
def test_csv_formula_injection_is_escaped(cell, expected):
    assert escape_csv_cell(cell) == expected


def test_file_exports_in_three_formats(tmp_path):
    import pyarrow.parquet as pq

    rows = [
        {
            "change_id": "ch1",
            "customer_id": "c1",
            "first_name": '=HYPERLINK("http://x")',
            "changed_at": datetime(2026, 11, 1, tzinfo=timezone.utc),
        },
        {"change_id": "ch2", "customer_id": "c2", "first_name": "Zoë", "changed_at": None},
    ]
    columns = ["change_id", "customer_id", "first_name", "changed_at"]
    write_export(rows, columns=columns, path=tmp_path / "x.csv", file_format="csv")
    with (tmp_path / "x.csv").open(encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["change_id", "customer_id", "first_name", "changed_at"],
            ["ch1", "c1", '\'=HYPERLINK("http://x")', "2026-11-01T00:00:00+00:00"],
            ["ch2", "c2", "Zoë", ""],
        ]
    write_export(rows, columns=columns, path=tmp_path / "x.jsonl", file_format="jsonl")
    assert [json.loads(line) for line in (tmp_path / "x.jsonl").read_text("utf-8").splitlines()] == [
        {
            "change_id": "ch1",
            "customer_id": "c1",
            "first_name": '=HYPERLINK("http://x")',
            "changed_at": "2026-11-01T00:00:00+00:00",
        },
        {"change_id": "ch2", "customer_id": "c2", "first_name": "Zoë", "changed_at": None},
    ]
    write_export(rows, columns=columns, path=tmp_path / "x.parquet", file_format="parquet")
    table = pq.read_table(tmp_path / "x.parquet").to_pylist()
    assert [(r["change_id"], r["first_name"], r["changed_at"]) for r in table] == [
        ("ch1", '=HYPERLINK("http://x")', datetime(2026, 11, 1, tzinfo=timezone.utc)),
        ("ch2", "Zoë", None),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv", "x.jsonl", "x.parquet"]


def test_hashing_follows_ad_platform_normalisation():
    assert normalise_email("  Ada@Example.COM ") == "ada@example.com"
    assert normalise_email("not-an-email") is None
    # sha256("ada@example.com"), from `printf %s ada@example.com | sha256sum`
    assert hash_email(" ADA@example.com") == "b5fc85e55755f9e0d030a10ab4429b6b2944855f9a0d60077fe832becbc41d72"
    assert normalise_phone("07700 900123") == "+447700900123"
    assert normalise_phone("(020) 7946 0018") == "+442079460018"
    assert normalise_phone("0000000000") is None
    assert normalise_phone("n/a") is None
    # sha256("+447700900123") and sha256("447700900123")
    assert hash_phone("07700 900123") == "a8acc3a90a7b4e4dc65e93db9240ed26523050ef754d63b75b5161de76781436"
    assert hash_phone("+44 7700 900123", phone_format="digits") == (
        "033134b911b137918338415ee3d20a064b24773d36a3b02e8b99fdd3fcd6b4cd"
    )


def test_destination_config_errors_name_file_and_field(tmp_path):
    folder = tmp_path / "destinations"
    folder.mkdir()
    (folder / "good.yaml").write_text(
        "version: 1\ntype: file\nformat: jsonl\nsegments: [vip]\nfields: [email]\n", encoding="utf-8"
    )
    assert load_destinations(tmp_path)["good"].format == "jsonl"
    (folder / "bad.yaml").write_text(
        "version: 1\ntype: webhook\nurl: http://x\nbatch_size: 0\npassword: hunter2\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError) as error:
        load_destinations(tmp_path)
    message = str(error.value)
    assert str(folder / "bad.yaml") in message
    assert "webhook.batch_size: Input should be greater than or equal to 1" in message
    assert "webhook.password: Extra inputs are not permitted" in message
    with pytest.raises(Exception, match="unknown profile fields \\['ssn'\\]"):
        DestinationFile.model_validate({"version": 1, "type": "file", "fields": ["ssn"]})


def test_demo_receiver_writes_what_it_receives(tmp_path):
    from lakecdp.activation.receiver import LocalReceiver

    output = tmp_path / "received" / "run.jsonl"
    with LocalReceiver(output) as receiver:
        settings = _settings(
            receiver.url, batch_size=2, payload_template='{"run": {{ run_id | tojson }}, "items": {{ items | tojson }}}'
        )
        result = WebhookClient("demo", settings, run_id="r9").deliver(_items("c1", "c2", "c3"))
    assert len(result.delivered) == 3
    lines = [json.loads(line) for line in output.read_text("utf-8").splitlines()]
    assert [
        (line["idempotency_key"], line["body"]["run"], [i["customer_id"] for i in line["body"]["items"]])
        for line in lines
    ] == [
        # a batch's header key: sha256("demo\x1ek-c1\x1fk-c2") (destination, sorted item keys)
        ("50bd59d72cc47959388936584b6782c1ef6915a2c9e14b98552c1d4359fff9ba", "r9", ["c1", "c2"]),
        ("k-c3", "r9", ["c3"]),  # one item: its own key
    ]
