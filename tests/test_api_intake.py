"""The event intake against the real service on 127.0.0.1 (a ``lakecdp serve`` process)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from api_server import KEYS, REPO_ROOT, Service, write_conf

WEB = KEYS["website"]


def web_event(n: int, **changes) -> dict:
    event = {
        "event_id": f"w-api-{n}",
        "event_type": "add_to_cart",
        "ts": "2026-10-31T12:00:00Z",
        "anonymous_id": f"d-{n}",
        "session_id": "s-1",
        "product_id": "P00042",
        "price": 19.99,
        "user": {"email": f"ada{n}@example.com", "customer_no": None},
    }
    event.update(changes)
    return event


def logged_events(root: Path) -> list[dict]:
    lines = []
    for path in sorted((root / "intake").glob("intake-*.log")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if "request" not in line]


@pytest.fixture
def service(tmp_path):
    running = Service(write_conf(tmp_path)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def refusing_service(tmp_path_factory):
    """One service for the bad bodies (a process start is ~1-4 s): each is refused and none is
    stored, so they cannot affect one another. (the service, the root of its log)"""
    root = tmp_path_factory.mktemp("refusing")
    running = Service(write_conf(root)).start()
    yield running, root
    running.stop()


def test_refuses_requests_without_a_key_or_with_a_wrong_one(service, tmp_path):
    body = {"source": "web_events", "event": web_event(1)}
    status, headers, answer = service.request("POST", "/v1/events", body)
    assert (status, answer["error"]["code"]) == (401, "UNAUTHENTICATED")
    assert headers["WWW-Authenticate"] == "Bearer"
    status, _, answer = service.request("POST", "/v1/events", body, key="not-a-key")
    assert (status, answer["error"]["code"]) == (401, "UNAUTHENTICATED")
    # a real key, but for another source
    status, _, answer = service.request("POST", "/v1/events", body, key=KEYS["email_platform"])
    assert (status, answer["error"]["fields"][0]["field"]) == (403, "source")
    assert logged_events(tmp_path) == []


def test_a_replayed_request_is_stored_once(service, tmp_path):
    body = {"source": "web_events", "events": [web_event(1), web_event(2)]}
    first = service.request("POST", "/v1/batch", body, key=WEB, headers={"Idempotency-Key": "req-1"})
    again = service.request("POST", "/v1/batch", body, key=WEB, headers={"Idempotency-Key": "req-1"})
    assert (first[0], first[2]) == (202, {"accepted": 2, "duplicates": 0})
    assert (again[0], again[2]) == (202, {"accepted": 2, "duplicates": 0, "replayed": True})
    # no idempotency key, but the same event ids: stored once too
    third = service.request("POST", "/v1/events", {"source": "web_events", "event": web_event(2)}, key=WEB)
    assert third[2] == {"accepted": 0, "duplicates": 1}
    assert [e["id"] for e in logged_events(tmp_path)] == ["w-api-1", "w-api-2"]


@pytest.mark.parametrize(
    ("body", "status", "field", "code"),
    [
        (b'{"source": "web_events", "event": {"event_id": ', 400, "body", "MALFORMED_LINE"),
        (b'{"source": "web_events", "event": "\xff"}', 400, "body", "BAD_ENCODING"),
        # a lone surrogate escape: not a character, cannot be stored as UTF-8 (was a 500)
        (
            b'{"source": "web_events", "event": {"event_id": "w-1", "event_type": "view", '
            b'"ts": "2026-10-31T12:00:00Z", "page_url": "\\ud800"}}',
            400,
            "body",
            "BAD_ENCODING",
        ),
        ({"event": {}}, 422, "source", "MISSING_REQUIRED"),
        ({"source": "crm", "event": {}}, 422, "source", "UNKNOWN_SOURCE"),
        ({"source": "web_events", "event": [1]}, 422, "event", "MALFORMED_LINE"),
        ({"source": "web_events", "event": web_event(1, ts=None)}, 422, "event.ts", "MISSING_REQUIRED"),
        ({"source": "web_events", "event": web_event(1, ts="31/10/2026 12:00")}, 422, "event.ts", "INVALID_TIMESTAMP"),
        ({"source": "web_events", "event": web_event(1, price="cheap")}, 422, "event.price", "INVALID_TYPE"),
        ({"source": "web_events", "event": web_event(1, user="ada")}, 422, "event.user", "MALFORMED_LINE"),
        (
            {"source": "web_events", "event": web_event(1, ts="2099-01-01T00:00:00Z")},
            422,
            "event.ts",
            "FUTURE_TIMESTAMP",
        ),
        (
            {"source": "web_events", "event": web_event(1, ts="1970-01-01T00:00:00Z")},
            422,
            "event.ts",
            "PLACEHOLDER_TIMESTAMP",
        ),
        ({"source": "web_events", "event": web_event(1, event_id="N/A")}, 422, "event.event_id", "INVALID_KEY"),
        # json.dumps writes a NaN token
        ({"source": "web_events", "event": web_event(1, price=float("nan"))}, 422, "event.price", "NON_FINITE_NUMBER"),
        (
            b'{"source": "web_events", "event": {"event_id": "w-1", "event_type": "view", '
            b'"ts": "2026-10-31T12:00:00Z", "price": 1e400}}',
            422,
            "event.price",
            "NON_FINITE_NUMBER",
        ),
        (
            {"source": "web_events", "events": [web_event(1), web_event(2, event_id="")]},
            422,
            "events[1].event_id",
            "MISSING_REQUIRED",
        ),
        ({"source": "web_events", "events": [web_event(n) for n in range(51)]}, 413, "events", "TOO_MANY_EVENTS"),
        ({"source": "web_events", "event": web_event(1, page_url="x" * 20000)}, 413, "body", "BODY_TOO_LARGE"),
    ],
)
def test_bad_bodies_get_a_4xx_naming_the_field(refusing_service, body, status, field, code):
    service, root = refusing_service
    path = "/v1/batch" if isinstance(body, dict) and "events" in body else "/v1/events"
    got, _, answer = service.request("POST", path, body, key=WEB)
    assert got == status, answer
    assert (answer["error"]["fields"][0]["field"], answer["error"]["fields"][0]["code"]) == (field, code)
    assert logged_events(root) == []  # nothing stored, by this body or any before it


def test_a_batch_with_bad_events_is_refused_with_every_problem_by_row(service, tmp_path):
    def text(event: dict) -> bytes:
        return json.dumps(event).encode()

    events = [
        text(web_event(1)),
        text(web_event(2))[:-1] + b', "price": NaN}',
        text(web_event(3, ts="yesterday")),
        text(web_event(4, event_id="N/A", price=1e400)).replace(b"Infinity", b"1e400"),
    ]
    body = b'{"source": "web_events", "events": [' + b", ".join(events) + b"]}"
    status, _, answer = service.request("POST", "/v1/batch", body, key=WEB)
    assert status == 422, answer
    assert answer["error"]["fields"] == [
        {"field": "events[1].price", "code": "NON_FINITE_NUMBER", "message": "'\"NaN\"' is not a finite number"},
        {"field": "events[2].ts", "code": "INVALID_TIMESTAMP", "message": "'yesterday' is not an ISO-8601 timestamp"},
        {"field": "events[3].price", "code": "NON_FINITE_NUMBER", "message": "'\"Infinity\"' is not a finite number"},
        {
            "field": "events[3].event_id",
            "code": "INVALID_KEY",
            "message": "'N/A' is a placeholder or holds invisible characters",
        },
    ]
    assert logged_events(tmp_path) == []
    # the good event alone is accepted; an integer beyond 64 bits is stored as it came
    status, _, answer = service.request(
        "POST",
        "/v1/events",
        b'{"source": "web_events", "event": ' + text(web_event(1))[:-1] + b', "order_no": 123456789012345678901}}',
        key=WEB,
    )
    assert (status, answer) == (202, {"accepted": 1, "duplicates": 0})
    assert [e["event"]["order_no"] for e in logged_events(tmp_path)] == [123456789012345678901]


def test_an_invalid_optional_email_is_accepted_with_a_warning(service, tmp_path):
    # web events: user.email is optional, so a bad one loads with a warning (as in batch ingest)
    event = web_event(1, user={"email": "ada at example", "customer_no": None})
    status, _, answer = service.request("POST", "/v1/events", {"source": "web_events", "event": event}, key=WEB)
    assert status == 202
    assert answer["warnings"] == [
        {"field": "event.user.email", "code": "INVALID_EMAIL", "message": "'ada at example' is not an email address"}
    ]
    # email events: email is required, so the same value refuses the event
    email = {"event_id": "e-1", "event_type": "open", "email": "ada at example", "occurred_at": "2026-10-31T10:00:00Z"}
    status, _, answer = service.request(
        "POST", "/v1/events", {"source": "email_events", "event": email}, key=KEYS["email_platform"]
    )
    assert (status, answer["error"]["fields"][0]["field"]) == (422, "event.email")


def test_future_is_judged_against_the_receive_time(service, tmp_path):
    # web_events' tolerance is a day past the request's receive time (not past the end of its day)
    now = datetime.now(timezone.utc)
    soon = web_event(1, ts=(now + timedelta(hours=22)).isoformat())
    late = web_event(2, ts=(now + timedelta(hours=26)).isoformat())
    assert service.request("POST", "/v1/events", {"source": "web_events", "event": soon}, key=WEB)[0] == 202
    status, _, answer = service.request("POST", "/v1/events", {"source": "web_events", "event": late}, key=WEB)
    assert (status, answer["error"]["fields"][0]["code"]) == (422, "FUTURE_TIMESTAMP")
    assert [e["id"] for e in logged_events(tmp_path)] == ["w-api-1"]


def test_rate_limit_answers_429_with_retry_after(service):
    body = {"source": "web_events", "event": web_event(1)}
    answers = [service.request("POST", "/v1/events", body, key=KEYS["slow"]) for _ in range(3)]
    assert [a[0] for a in answers] == [202, 202, 429]
    assert answers[2][1]["Retry-After"] == "2"  # 0.5 requests/s: the next token in 2 s
    assert answers[2][2]["error"]["code"] == "RATE_LIMITED"


def test_health_readiness_and_the_committed_openapi_document(service):
    assert service.request("GET", "/healthz")[0] == 200
    status, _, answer = service.request("GET", "/readyz")
    assert status == 200 and answer["checks"]["intake_log"] is True
    served = service.request("GET", "/openapi.json")[2]
    committed = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
    assert served == committed, "docs/openapi.json is stale: lakecdp api-openapi > docs/openapi.json"


@pytest.mark.slow
def test_kill_9_after_the_answer_loses_no_event(tmp_path, spark):
    from deltalake import DeltaTable

    from lakecdp.api.pickup import LEDGER, pickup
    from lakecdp.config import load_project
    from lakecdp.context import JobContext

    conf = write_conf(tmp_path)
    service = Service(conf).start()
    try:
        for n in range(1, 6):
            status, _, _ = service.request(
                "POST", "/v1/events", {"source": "web_events", "event": web_event(n)}, key=WEB
            )
            assert status == 202
        status, _, _ = service.request(
            "POST", "/v1/batch", {"source": "web_events", "events": [web_event(n) for n in range(6, 11)]}, key=WEB
        )
        assert status == 202
        service.kill9()
        # a restarted service remembers what it stored: a client's retry is not stored twice
        service = Service(conf).start()
        status, _, answer = service.request(
            "POST", "/v1/events", {"source": "web_events", "event": web_event(3)}, key=WEB
        )
        assert answer == {"accepted": 0, "duplicates": 1}
        # one event the validator of the pickup (Spark) must load too, and one new
        status, _, _ = service.request("POST", "/v1/events", {"source": "web_events", "event": web_event(11)}, key=WEB)
        assert status == 202
    finally:
        service.stop()

    project = load_project(conf, env="apitest")
    counts = pickup(JobContext.create(project, spark), tmp_path / "intake")
    assert counts == {
        "rows_read": 11,
        "rows_loaded": 11,
        "rows_quarantined": 0,
        "duplicates_removed": 0,
        "rows_erased": 0,
    }
    # a second pickup finds nothing new
    again = pickup(JobContext.create(project, spark), tmp_path / "intake")
    assert again["rows_read"] == 0
    events = DeltaTable(str(tmp_path / "warehouse" / "silver" / "events")).to_pyarrow_table().to_pylist()
    assert sorted(e["event_id"] for e in events) == sorted(f"w-api-{n}" for n in range(1, 12))
    assert {(e["event_type"], e["channel"], e["value"]) for e in events} == {("add_to_cart", "web", 19.99)}
    ledger = DeltaTable(str(tmp_path / "warehouse" / "ops" / "api_intake")).to_pyarrow_table().to_pylist()
    assert sorted(r["status"] for r in ledger) == ["done", "started"]
    assert LEDGER == "ops.api_intake"


@pytest.mark.slow
def test_a_pickup_killed_before_its_ledger_commit_is_replayed_with_the_same_bounds(tmp_path, spark, monkeypatch):
    from deltalake import DeltaTable

    import lakecdp.api.pickup as pickup_module
    from lakecdp.config import load_project
    from lakecdp.context import JobContext

    conf = write_conf(tmp_path)
    service = Service(conf).start()
    try:
        events = [web_event(n) for n in range(1, 4)] + [web_event(4, user={"email": "x@@y", "customer_no": None})]
        assert service.request("POST", "/v1/batch", {"source": "web_events", "events": events}, key=WEB)[0] == 202
    finally:
        service.stop()
    project = load_project(conf, env="apitest")
    real_record = pickup_module._record

    def die_before_done(ctx, segment, start, end, status, count, store=None):
        if status == "done":
            raise KeyboardInterrupt("killed between the silver commit and the ledger's done row")
        real_record(ctx, segment, start, end, status, count, store)

    monkeypatch.setattr(pickup_module, "_record", die_before_done)
    with pytest.raises(KeyboardInterrupt):
        pickup_module.pickup(JobContext.create(project, spark), tmp_path / "intake")
    monkeypatch.setattr(pickup_module, "_record", real_record)
    # more events arrive before the next pickup: the replayed chunk keeps its bounds
    service = Service(conf).start()
    try:
        assert service.request("POST", "/v1/events", {"source": "web_events", "event": web_event(5)}, key=WEB)[0] == 202
    finally:
        service.stop()
    counts = pickup_module.pickup(JobContext.create(project, spark), tmp_path / "intake")
    # the replay finds its 4 events already in silver (duplicates), then event 5 is new
    assert counts == {
        "rows_read": 5,
        "rows_loaded": 1,
        "rows_quarantined": 0,
        "duplicates_removed": 4,
        "rows_erased": 0,
    }
    events = DeltaTable(str(tmp_path / "warehouse" / "silver" / "events")).to_pyarrow_table().to_pylist()
    assert sorted(e["event_id"] for e in events) == [f"w-api-{n}" for n in range(1, 6)]
    # the invalid optional email was nulled with a warning, as batch ingest does
    assert {e["event_id"]: e["email"] for e in events}["w-api-4"] is None
    audit = DeltaTable(str(tmp_path / "warehouse" / "ops" / "ingest_audit")).to_pyarrow_table().to_pylist()
    assert sorted((a["stream_batch"], a["rows_read"], a["rows_loaded"]) for a in audit) == [
        ("api_intake_00000001:0", 4, 4),
        (f"api_intake_00000001:{_first_chunk_end(tmp_path)}", 1, 1),
    ]


def _first_chunk_end(root: Path) -> int:
    lines = (root / "intake" / "intake-00000001.log").read_bytes().split(b"\n")
    return sum(len(line) + 1 for line in lines[:4])


@pytest.mark.slow
def test_an_order_posted_over_http_updates_silver_orders_as_a_landed_order_file_does(tmp_path, spark):
    from deltalake import DeltaTable

    from lakecdp.api.pickup import pickup
    from lakecdp.config import load_project
    from lakecdp.context import JobContext

    conf = write_conf(tmp_path)
    order = {
        "order_id": "O-api-1",
        "customer_no": " C-77 ",
        "email": "Ada.Lovelace@Example.com",
        "ordered_at": "2026-10-31T18:00:00Z",
        "status": "completed",
        "currency": "eur",
        "total": 59.97,
        "items": [{"sku": "P00042", "qty": 2, "unit_price": 19.99}, {"sku": "P00007", "qty": 1, "unit_price": 19.99}],
    }
    service = Service(conf).start()
    try:
        # the website's key may not post orders; the shop's may
        assert service.request("POST", "/v1/events", {"source": "shop_orders", "event": order}, key=WEB)[0] == 403
        status, _, answer = service.request(
            "POST", "/v1/events", {"source": "shop_orders", "event": order}, key=KEYS["shop"]
        )
        assert (status, answer) == (202, {"accepted": 1, "duplicates": 0})
        # an order without its total is refused with the field named, as a landed file quarantines it
        status, _, refused = service.request(
            "POST",
            "/v1/events",
            {"source": "shop_orders", "event": {**order, "order_id": "O-api-2", "total": None}},
            key=KEYS["shop"],
        )
        assert (status, [f["field"] for f in refused["error"]["fields"]]) == (422, ["event.total"])
    finally:
        service.stop()

    counts = pickup(JobContext.create(load_project(conf, env="apitest"), spark), tmp_path / "intake")
    assert (counts["rows_read"], counts["rows_loaded"], counts["rows_quarantined"]) == (1, 1, 0)
    orders = DeltaTable(str(tmp_path / "warehouse" / "silver" / "orders")).to_pyarrow_table().to_pylist()
    # the batch ingest's mapping: email normalised, customer number trimmed, currency upper-cased
    assert [
        (o["order_id"], o["source"], o["customer_number"], o["email"], o["status"], o["currency"], o["total"])
        for o in orders
    ] == [("O-api-1", "shop_orders", "C-77", "ada.lovelace@example.com", "completed", "EUR", 59.97)]
    items = DeltaTable(str(tmp_path / "warehouse" / "silver" / "order_items")).to_pyarrow_table().to_pylist()
    assert sorted(
        (i["order_id"], i["line_number"], i["product_id"], i["quantity"], i["unit_price"]) for i in items
    ) == [("O-api-1", 1, "P00042", 2, 19.99), ("O-api-1", 2, "P00007", 1, 19.99)]


@pytest.mark.slow
def test_the_pickup_judges_future_by_the_receive_time_as_the_service_did(tmp_path, spark):
    """The project's as-of is 2026-11-01; an event of a minute ago is not 'future' for the service
    (it judges by the request's receive time) and must not be for the pickup either."""
    from lakecdp.api.pickup import pickup
    from lakecdp.config import load_project
    from lakecdp.context import JobContext

    conf = write_conf(tmp_path)
    recent = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    service = Service(conf).start()
    try:
        assert (
            service.request("POST", "/v1/events", {"source": "web_events", "event": web_event(1, ts=recent)}, key=WEB)[
                0
            ]
            == 202
        )
    finally:
        service.stop()
    counts = pickup(JobContext.create(load_project(conf, env="apitest"), spark), tmp_path / "intake")
    assert (counts["rows_read"], counts["rows_loaded"], counts["rows_quarantined"]) == (1, 1, 0)


# -- the log itself (no service): concurrent group commits, rotation, a failed sync ---------------


def _append_all(log, batches: list[list[str]]) -> list[BaseException | None]:
    import asyncio

    async def one(ids: list[str]) -> BaseException | None:
        records = [
            {"source": "web_events", "id": i, "event": {"event_id": i}, "key": "k", "idem": None, "at": "t"}
            for i in ids
        ]
        log.reserve("web_events", ids)
        try:
            await log.append(records, key_id="k", idempotency_key=None, response={}, strict_json=True)
        except Exception as exc:  # noqa: BLE001 - returned to the test
            return exc
        return None

    async def every() -> list[BaseException | None]:
        return await asyncio.gather(*(one(ids) for ids in batches))

    return asyncio.run(every())


def test_concurrent_appends_across_segments_are_whole_lines_each_once(tmp_path):
    from lakecdp.api.intake_log import IntakeLog, segments

    log = IntakeLog(tmp_path / "intake", segment_bytes=4096)
    batches = [[f"w-{b}-{n}" for n in range(b % 7 + 1)] for b in range(300)]
    # three rounds of 100 concurrent requests: all of one round may land in one group (a group is
    # never split), but each round writes ~30 KB, so the next round's first group must rotate
    for start in (0, 100, 200):
        assert _append_all(log, batches[start : start + 100]) == [None] * 100
    log.close()
    files = segments(tmp_path / "intake")
    assert len(files) >= 3  # rotated at least once per round after the first
    lines = [line for _, path in files for line in path.read_bytes().split(b"\n")[:-1]]
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(i for ids in batches for i in ids)
    # a request's lines stay together and in order, in one segment
    for _, path in files:
        ids = [json.loads(line)["id"] for line in path.read_bytes().splitlines()]
        for batch in {i.rsplit("-", 1)[0] for i in ids}:
            mine = [i for i in ids if i.rsplit("-", 1)[0] == batch]
            assert mine == [f"{batch}-{n}" for n in range(len(mine))]
    reopened = IntakeLog(tmp_path / "intake", segment_bytes=4096)
    assert len(reopened.event_ids) == sum(len(ids) for ids in batches)
    reopened.close()


def test_a_failed_sync_answers_503_and_stops_the_log(tmp_path, monkeypatch):
    import errno

    from lakecdp.api import intake_log
    from lakecdp.api.intake_log import IntakeLog, IntakeLogError

    log = IntakeLog(tmp_path / "intake")
    assert _append_all(log, [["w-1"]]) == [None]

    def failing(fd: int) -> None:  # a disk error cannot be caused on demand: the one injected fault
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(intake_log, "_datasync", failing)
    [error] = _append_all(log, [["w-2"]])
    assert isinstance(error, IntakeLogError) and "Input/output error" in str(error)
    assert log.writable() is False
    monkeypatch.undo()
    # fail-stop: nothing more is taken (the kernel may have dropped what the failed sync held)
    [error] = _append_all(log, [["w-3"]])
    assert isinstance(error, IntakeLogError) and "stopped after a failed sync" in str(error)
    assert "w-2" not in {i.split("\u001f")[1] for i in log.event_ids}
    log.close()


def test_a_backlog_is_picked_up_in_bounded_chunks_cut_at_line_ends(tmp_path):
    """A long backlog must not reach Spark as one micro-batch (300,000 events in one local
    relation ran a 1 GB driver out of heap): the pickup cuts it at line ends."""
    from lakecdp.api.pickup import chunk_bounds

    path = tmp_path / "intake-00000001.log"
    # lines of 10 bytes at 0, 10, 20, 30, 40; one of 40 bytes at 50; a torn tail at 90
    path.write_bytes(b"aaaaaaaaa\n" * 5 + b"b" * 39 + b"\n" + b"torn")
    assert chunk_bounds(path, 0, 90, max_bytes=25) == [(0, 20), (20, 40), (40, 50), (50, 90)]
    assert chunk_bounds(path, 10, 50, max_bytes=25) == [(10, 30), (30, 50)]
    assert chunk_bounds(path, 0, 90, max_bytes=1 << 20) == [(0, 90)]
    assert chunk_bounds(path, 90, 90, max_bytes=25) == []
