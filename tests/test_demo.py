"""``lakecdp demo`` runs the local receiver its demo destinations deliver to; the activation step
starts nothing and sets no environment variable: without the receiver's url it leaves a demo
destination out (its changes wait), with it it delivers."""

from __future__ import annotations

import json
import os
import urllib.request
from datetime import datetime, timezone

import pytest
from deltalake import DeltaTable

from lakecdp.activation import job
from lakecdp.activation.config import DEMO_RECEIVER_ENV, load_destinations
from lakecdp.context import JobContext
from lakecdp.demo import demo_receiver
from lakecdp.tables import Tables
from conftest import REPO_ROOT

T1 = datetime(2026, 10, 20, tzinfo=timezone.utc)
CHANGES = (
    "change_id string, run_id string, segment_id string, customer_id string, member_key string, "
    "change_type string, previous_customer_id string, changed_at timestamp, reason string"
)


def _post(url: str, body: dict) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def test_demo_receiver_serves_while_the_block_runs_and_sets_the_url_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(DEMO_RECEIVER_ENV, raising=False)
    with demo_receiver(tmp_path / "warehouse") as receiver:
        assert receiver is not None
        url = os.environ[DEMO_RECEIVER_ENV]
        assert url == receiver.url and url.startswith("http://127.0.0.1:")
        assert _post(url, {"items": [{"customer_id": "c1"}]}) == 200
    assert DEMO_RECEIVER_ENV not in os.environ
    files = list((tmp_path / "warehouse" / "demo_receiver").glob("*.jsonl"))
    assert len(files) == 1
    assert [json.loads(line)["body"] for line in files[0].read_text().splitlines()] == [
        {"items": [{"customer_id": "c1"}]}
    ]
    # stopped with the block
    with pytest.raises(OSError):
        _post(url, {"items": []})


def test_demo_receiver_keeps_a_url_already_set(tmp_path, monkeypatch):
    monkeypatch.setenv(DEMO_RECEIVER_ENV, "http://127.0.0.1:9/")
    with demo_receiver(tmp_path / "warehouse") as receiver:
        assert receiver is None
        assert os.environ[DEMO_RECEIVER_ENV] == "http://127.0.0.1:9/"
    assert os.environ[DEMO_RECEIVER_ENV] == "http://127.0.0.1:9/"
    assert not (tmp_path / "warehouse").exists()


def test_the_shipped_demo_destinations_wait_for_the_receiver_url(monkeypatch):
    destinations = load_destinations(REPO_ROOT / "conf")
    monkeypatch.delenv(DEMO_RECEIVER_ENV, raising=False)
    assert sorted(job.waiting_demo_destinations(destinations)) == ["demo_sms", "demo_webhook"]
    monkeypatch.setenv(DEMO_RECEIVER_ENV, "http://127.0.0.1:9/")
    assert job.waiting_demo_destinations(destinations) == []


def _deliveries(project) -> list[tuple[str, str, str]]:
    path = project.warehouse / "activation" / "deliveries"
    rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    return sorted((r["destination"], r["change_id"], r["status"]) for r in rows)


@pytest.mark.slow
def test_activation_leaves_a_demo_destination_out_until_the_demo_runs_its_receiver(
    spark, project, tmp_path, monkeypatch
):
    conf = tmp_path / "conf"
    (conf / "destinations").mkdir(parents=True)
    (conf / "privacy.yaml").write_text("version: 1\n")
    (conf / "destinations" / "hook.yaml").write_text(
        "version: 1\ntype: webhook\nurl: ${" + DEMO_RECEIVER_ENV + "}\ndemo_receiver: true\n"
        "allow_private_network: true\nsegments: [vip]\nfields: []\ntimeout_seconds: 5\n"
    )
    project = project.model_copy(update={"conf_dir": conf})
    Tables(project).append(
        spark.createDataFrame(
            [
                ("ch1", "seg-r1", "vip", "c1", "", "entered", None, T1, "{}"),
                ("ch2", "seg-r1", "vip", "c2", "", "entered", None, T1, "{}"),
            ],
            CHANGES,
        ),
        "segments.changes",
    )
    monkeypatch.delenv(DEMO_RECEIVER_ENV, raising=False)

    # a run without the demo's receiver: nothing started, nothing sent, nothing recorded as done
    counts = job.run(JobContext.create(project, spark, run_id="act-1"))
    assert counts == {"delivered": 0, "demo_destinations_waiting": 1}
    assert DEMO_RECEIVER_ENV not in os.environ
    assert not (project.warehouse / "demo_receiver").exists()
    assert _deliveries(project) == []

    # the demo's run: the waiting changes are delivered to its receiver
    with demo_receiver(project.warehouse):
        counts = job.run(JobContext.create(project, spark, run_id="act-2"))
    assert counts["delivered"] == 2 and "demo_destinations_waiting" not in counts
    assert _deliveries(project) == [("hook", "ch1", "delivered"), ("hook", "ch2", "delivered")]
    [log] = (project.warehouse / "demo_receiver").glob("*.jsonl")
    received = [
        item["customer_id"] for line in log.read_text().splitlines() for item in json.loads(line)["body"]["items"]
    ]
    assert sorted(received) == ["c1", "c2"]
