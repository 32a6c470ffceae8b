"""The started / done chunk ledger both intake followers keep (lakecdp.api.chunk_ledger), without
an engine: ledger rows written by hand, the position each stream resumes from written by hand."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from lakecdp import catalog
from lakecdp.api.chunk_ledger import ChunkLedger

KAFKA = ChunkLedger(catalog.KAFKA_INTAKE, key=("topic", "partition"))
LOG = ChunkLedger(catalog.API_INTAKE, key=("segment",))


def _kafka(topic, partition, start, end, status):
    return {"topic": topic, "partition": partition, "start_offset": start, "end_offset": end, "status": status}


def test_state_resumes_after_the_last_done_chunk_and_replays_a_started_one():
    rows = [
        # web[0]: two chunks done, the third started and never done (the follower was killed)
        _kafka("web", 0, 0, 10, "started"),
        _kafka("web", 0, 0, 10, "done"),
        _kafka("web", 0, 10, 25, "started"),
        _kafka("web", 0, 10, 25, "done"),
        _kafka("web", 0, 25, 40, "started"),
        # web[1]: a started chunk replayed and done (its second started row is the replay's)
        _kafka("web", 1, 0, 7, "started"),
        _kafka("web", 1, 0, 7, "done"),
        # shop[0]: only a started chunk: no done end yet
        _kafka("shop", 0, 3, 9, "started"),
    ]
    assert KAFKA.state(reversed(rows)) == {
        ("web", 0): (25, (25, 40)),
        ("web", 1): (7, None),
        ("shop", 0): (None, (3, 9)),
    }
    assert KAFKA.state([]) == {}


def test_a_done_chunk_clears_the_started_one_before_it():
    # started [5, 9) never done, then a later run's done chunk [5, 12) covers it
    rows = [
        {"segment": 2, "start_offset": 0, "end_offset": 5, "status": "done"},
        {"segment": 2, "start_offset": 5, "end_offset": 9, "status": "started"},
        {"segment": 2, "start_offset": 5, "end_offset": 12, "status": "done"},
        {"segment": 3, "start_offset": 0, "end_offset": 4, "status": "started"},
    ]
    assert LOG.state(rows) == {(2,): (12, None), (3,): (None, (0, 4))}


def test_rows_are_the_tables_columns_stamped_with_the_run():
    before = datetime.now(timezone.utc)
    rows = KAFKA.rows([(("web", 0), 10, 25, 15), (("web", 1), 0, 7, 7)], "done", run_id="r1").to_pylist()
    assert [{k: v for k, v in r.items() if k != "at"} for r in rows] == [
        {
            "topic": "web",
            "partition": 0,
            "start_offset": 10,
            "end_offset": 25,
            "status": "done",
            "events": 15,
            "run_id": "r1",
        },
        {
            "topic": "web",
            "partition": 1,
            "start_offset": 0,
            "end_offset": 7,
            "status": "done",
            "events": 7,
            "run_id": "r1",
        },
    ]
    assert all(before <= r["at"] <= datetime.now(timezone.utc) for r in rows)
    assert list(LOG.rows([((4,), 0, 3, 0)], "started", run_id="r2").column_names) == list(catalog.API_INTAKE.columns)
    with pytest.raises(ValueError, match="ops.kafka_intake: status must be 'started' or 'done', got 'finished'"):
        KAFKA.rows([(("web", 0), 0, 1, 1)], "finished", run_id="r1")
