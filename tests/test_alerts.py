"""Alerts: every kind fires once per cause, to a real local webhook receiver and SMTP server."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest

from conftest import REPO_ROOT, make_project

T0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
TS = pa.timestamp("us", tz="UTC")


def write(project, name: str, rows: list[dict], schema: pa.Schema) -> None:
    from deltalake import write_deltalake

    from lakecdp.tables import Tables

    write_deltalake(Tables(project).location(name), pa.Table.from_pylist(rows, schema), mode="append")


RUNS = pa.schema(
    [
        ("run_id", pa.string()),
        ("job", pa.string()),
        ("step", pa.string()),
        ("status", pa.string()),
        ("started_at", TS),
        ("duration_s", pa.float64()),
        ("message", pa.string()),
    ]
)
APPROVALS = pa.schema(
    [
        ("run_id", pa.string()),
        ("segment_id", pa.string()),
        ("previous_size", pa.int64()),
        ("new_size", pa.int64()),
        ("change_share", pa.float64()),
        ("threshold", pa.float64()),
        ("status", pa.string()),
    ]
)
AUDIT = pa.schema(
    [
        ("run_id", pa.string()),
        ("source", pa.string()),
        ("source_file", pa.string()),
        ("rows_read", pa.int64()),
        ("rows_quarantined", pa.int64()),
        ("stream_batch", pa.string()),
    ]
)
ID_CHANGES = pa.schema([("run_id", pa.string()), ("change_type", pa.string()), ("changed_at", TS)])
DEAD = pa.schema([("destination", pa.string()), ("run_id", pa.string()), ("reason", pa.string())])


def run(run_id: str, step: str, day: int, seconds: float, status: str = "succeeded") -> dict:
    return {
        "run_id": run_id,
        "job": "pipeline",
        "step": step,
        "status": status,
        "started_at": T0 + timedelta(days=day),
        "duration_s": seconds,
        "message": "ValueError: boom" if status == "failed" else None,
    }


def clean_world(project) -> None:
    """What a healthy history looks like: nothing here may alert."""
    write(
        project,
        "ops.runs",
        [run(f"R{d}", s, d, 10.0 + d) for d in range(1, 4) for s in ("ingest", "features")]
        + [run("R4", "features", 4, 25.0)],
        RUNS,
    )  # 25 s < 3 x median 12 s
    write(
        project,
        "segments.approvals",
        [
            {
                "run_id": "R3",
                "segment_id": "churn_risk",
                "previous_size": 100,
                "new_size": 200,
                "change_share": 1.0,
                "threshold": 0.5,
                "status": "approved",
            }
        ],
        APPROVALS,
    )
    write(
        project,
        "ops.ingest_audit",
        [
            {
                "run_id": "R1",
                "source": "crm",
                "source_file": "crm/crm_customers_2.csv",
                "rows_read": 1000,
                "rows_quarantined": 50,
                "stream_batch": None,
            },  # exactly 5%: not above
            {
                "run_id": "R1",
                "source": "web_events",
                "source_file": "kafka://lakecdp.web_events",
                "rows_read": 50,
                "rows_quarantined": 10,
                "stream_batch": "q:7",
            },
        ],
        AUDIT,
    )  # under min_rows
    write(
        project,
        "identity.id_changes",
        [
            {"run_id": f"I{d}", "change_type": "merge", "changed_at": T0 + timedelta(days=d)}
            for d, merges in ((1, 2), (2, 3), (3, 2))
            for _ in range(merges)
        ],
        ID_CHANGES,
    )


def troubled_world(project) -> None:
    clean_world(project)
    write(project, "ops.runs", [run("R4", "ingest", 4, 50.0), run("R4", "identity", 4, 3.0, "failed")], RUNS)
    write(
        project,
        "segments.approvals",
        [
            {
                "run_id": "R4",
                "segment_id": "vip",
                "previous_size": 100,
                "new_size": 400,
                "change_share": 3.0,
                "threshold": 0.5,
                "status": "held",
            }
        ],
        APPROVALS,
    )
    write(
        project,
        "ops.ingest_audit",
        [
            {
                "run_id": "R1",
                "source": "crm",
                "source_file": "crm/crm_customers_1.csv",
                "rows_read": 1000,
                "rows_quarantined": 60,
                "stream_batch": None,
            }
        ],
        AUDIT,
    )
    write(
        project,
        "identity.id_changes",
        [{"run_id": "I4", "change_type": "merge", "changed_at": T0 + timedelta(days=4)} for _ in range(12)]
        + [{"run_id": "I4", "change_type": "new", "changed_at": T0 + timedelta(days=4)}],
        ID_CHANGES,
    )
    write(
        project,
        "activation.dead_letter",
        [
            {"destination": "demo_webhook", "run_id": "A1", "reason": "500"},
            {"destination": "demo_webhook", "run_id": "A1", "reason": "500"},
            {"destination": "demo_ads", "run_id": "A2", "reason": "timeout"},
        ],
        DEAD,
    )


@pytest.fixture
def receivers(monkeypatch):
    from aiosmtpd.controller import Controller

    posts: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    monkeypatch.setenv("LAKECDP_ALERTS_WEBHOOK_URL", f"http://127.0.0.1:{http.server_address[1]}/hook")

    mails: list[str] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            mails.append(envelope.content.decode())
            return "250 OK"

    from api_server import free_port

    smtp = Controller(Handler(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    yield posts, mails, smtp.port
    smtp.stop()
    http.shutdown()


def config_for(port: int):
    from lakecdp.alerts import load_alerts_config

    config = load_alerts_config(REPO_ROOT / "conf")
    email = config.channels["ops_email"].model_copy(update={"port": port})
    return config.model_copy(update={"channels": {**config.channels, "ops_email": email}})


def test_every_kind_fires_once_per_cause(tmp_path, receivers):
    from lakecdp.alerts import check_and_send

    posts, mails, port = receivers
    project = make_project(tmp_path)
    troubled_world(project)
    config = config_for(port)
    sent = check_and_send(project, config)
    expected = {
        ("run_failed:R4:identity", "slack"),
        ("run_failed:R4:identity", "ops_email"),
        ("slow_step:R4:ingest", "slack"),
        ("segment_held:R4:vip", "slack"),
        ("quarantine_rate:crm:crm/crm_customers_1.csv:R1", "slack"),
        ("quarantine_rate:crm:crm/crm_customers_1.csv:R1", "ops_email"),
        ("identity_merge_spike:I4", "slack"),
        ("dead_letters:demo_webhook:A1", "slack"),
        ("dead_letters:demo_webhook:A1", "ops_email"),
        ("dead_letters:demo_ads:A2", "slack"),
        ("dead_letters:demo_ads:A2", "ops_email"),
    }
    assert {(a.cause, c) for a, c in sent} == expected
    assert sorted(p["lakecdp"]["cause"] for p in posts) == sorted(c for c, ch in expected if ch == "slack")
    assert len(mails) == 4
    held = next(p for p in posts if p["lakecdp"]["kind"] == "segment_held")
    assert "lakecdp segments approve --segment vip --run R4" in held["text"]
    assert any("Subject: [lakecdp] pipeline run R4: step identity failed" in m for m in mails)
    # the same causes again: nothing is sent twice
    assert check_and_send(project, config) == []
    assert (len(posts), len(mails)) == (7, 4)


def test_a_clean_history_sends_nothing(tmp_path, receivers):
    from lakecdp.alerts import check_and_send

    posts, mails, port = receivers
    project = make_project(tmp_path)
    clean_world(project)
    assert check_and_send(project, config_for(port)) == []
    assert (posts, mails) == ([], [])


def test_a_failed_channel_is_retried_next_check_and_only_it(tmp_path, receivers, monkeypatch):
    from lakecdp.alerts import check_and_send

    posts, mails, port = receivers
    project = make_project(tmp_path)
    write(project, "ops.runs", [run("R9", "segments", 1, 1.0, "failed")], RUNS)
    config = config_for(port)
    broken = config.model_copy(
        update={
            "channels": {**config.channels, "ops_email": config.channels["ops_email"].model_copy(update={"port": 1})}
        }
    )
    assert [(a.cause, c) for a, c in check_and_send(project, broken)] == [("run_failed:R9:segments", "slack")]
    assert [(a.cause, c) for a, c in check_and_send(project, config)] == [("run_failed:R9:segments", "ops_email")]
    assert (len(posts), len(mails)) == (1, 1)


def quick_step(ctx) -> dict[str, int]:
    return {"rows": 1}


def failing_step(ctx) -> dict[str, int]:
    raise ValueError("the source folder is gone")


# three pipeline runs (~50 s on an idle box): full suite only
@pytest.mark.slow
def test_the_pipeline_run_sends_its_own_alerts_once_per_cause(tmp_path, receivers, spark):
    import shutil

    import yaml

    from lakecdp.pipeline import StepFailedError, run_pipeline
    from lakecdp.steps import Step

    posts, mails, port = receivers
    conf = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf)
    alerts = yaml.safe_load((conf / "alerts.yaml").read_text())
    alerts["channels"]["ops_email"]["port"] = port
    (conf / "alerts.yaml").write_text(yaml.safe_dump(alerts))
    project = make_project(tmp_path).model_copy(update={"conf_dir": conf})
    steps = [Step("quick", "test_alerts:quick_step"), Step("boom", "test_alerts:failing_step")]

    with pytest.raises(StepFailedError):
        run_pipeline(project, spark, steps=steps, job="alerting")
    assert [p["lakecdp"]["kind"] for p in posts] == ["run_failed"]
    cause = posts[0]["lakecdp"]["cause"]
    run_id = cause.split(":")[1]
    assert cause == f"run_failed:{run_id}:boom"
    assert "ValueError: the source folder is gone" in posts[0]["text"]
    assert f"See: lakecdp run (resumes run {run_id} at boom)" in posts[0]["text"]
    assert len(mails) == 1 and f"Subject: [lakecdp] alerting run {run_id}: step boom failed" in mails[0]
    # the resumed run fails the same step of the same run: the same cause, not sent again
    with pytest.raises(StepFailedError):
        run_pipeline(project, spark, steps=steps, job="alerting")
    # a new run that succeeds: nothing new
    run_pipeline(project, spark, steps=steps[:1], job="alerting", resume=False)
    assert (len(posts), len(mails)) == (1, 1)
