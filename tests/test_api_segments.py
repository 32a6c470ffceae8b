"""The segment API for email platforms against the real service, on tables written with delta-rs.

Expected rows are written by hand from the table contents below.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest

from api_server import KEYS, Service, write_conf

T0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
TS = pa.timestamp("us", tz="UTC")
PLATFORM, READER = KEYS["email_platform"], KEYS["reader"]


def write(root, name: str, rows: list[dict], schema: pa.Schema, mode: str = "append") -> None:
    from deltalake import write_deltalake

    layer, table = name.split(".")
    write_deltalake(str(root / "warehouse" / layer / table), pa.Table.from_pylist(rows, schema), mode=mode)


RUNS = pa.schema(
    [
        ("run_id", pa.string()),
        ("mode", pa.string()),
        ("as_of", TS),
        ("segments", pa.list_(pa.string())),
        ("changes", pa.int64()),
        ("membership_version", pa.int64()),
        ("applied_at", TS),
    ]
)
MEMBERSHIP = pa.schema(
    [
        ("segment_id", pa.string()),
        ("customer_id", pa.string()),
        ("member_key", pa.string()),
        ("entered_at", TS),
        ("exited_at", TS),
        ("entered_run_id", pa.string()),
        ("exited_run_id", pa.string()),
        ("reason", pa.string()),
        ("is_current", pa.bool_()),
    ]
)
CHANGES = pa.schema(
    [
        ("change_id", pa.string()),
        ("run_id", pa.string()),
        ("segment_id", pa.string()),
        ("customer_id", pa.string()),
        ("member_key", pa.string()),
        ("change_type", pa.string()),
        ("previous_customer_id", pa.string()),
        ("changed_at", TS),
        ("reason", pa.string()),
    ]
)
APPROVALS = pa.schema([("run_id", pa.string()), ("segment_id", pa.string()), ("status", pa.string())])
SUPPRESSIONS = pa.schema(
    [
        ("customer_id", pa.string()),
        ("reason", pa.string()),
        ("identifier_type", pa.string()),
        ("identifier_value", pa.string()),
        ("since", TS),
        ("run_id", pa.string()),
    ]
)
PROFILE = pa.schema(
    [
        ("customer_id", pa.string()),
        ("email", pa.string()),
        ("first_name", pa.string()),
        ("last_name", pa.string()),
        ("emails", pa.list_(pa.string())),
        ("phones", pa.list_(pa.string())),
    ]
)


def member(customer: str, run: str, current: bool = True, segment: str = "vip") -> dict:
    return {
        "segment_id": segment,
        "customer_id": customer,
        "member_key": "",
        "entered_at": T0,
        "exited_at": None,
        "entered_run_id": run,
        "exited_run_id": None if current else "R2",
        "reason": "{}",
        "is_current": current,
    }


def change(cid: str, run: str, customer: str, kind: str = "entered", segment: str = "vip") -> dict:
    return {
        "change_id": cid,
        "run_id": run,
        "segment_id": segment,
        "customer_id": customer,
        "member_key": "",
        "change_type": kind,
        "previous_customer_id": None,
        "changed_at": T0,
        "reason": "{}",
    }


@pytest.fixture
def warehouse(tmp_path):
    people = [
        ("C1", "ada@example.com", "Ada", []),
        ("C2", "bob@example.com", "Bob", []),
        ("C3", "cy@example.com", "Cy", ["cy.old@example.com"]),
        ("C4", "dee@example.com", "Dee", []),
        ("C5", "eve@example.com", "Eve", []),
        ("C6", "fay@example.com", "Fay", []),
        ("C7", "gus@example.com", "Gus", []),
    ]
    write(
        tmp_path,
        "gold.customer_profile",
        [
            {"customer_id": c, "email": e, "first_name": f, "last_name": "X", "emails": [e, *more], "phones": []}
            for c, e, f, more in people
        ],
        PROFILE,
    )
    # C2 unsubscribed (resolved to the customer); an old address of C3 bounced (identifier only)
    write(
        tmp_path,
        "activation.suppressions",
        [
            {
                "customer_id": "C2",
                "reason": "unsubscribed",
                "identifier_type": "email",
                "identifier_value": "bob@example.com",
                "since": T0,
                "run_id": "A1",
            },
            {
                "customer_id": None,
                "reason": "hard_bounce",
                "identifier_type": "email",
                "identifier_value": "cy.old@example.com",
                "since": T0,
                "run_id": "A1",
            },
        ],
        SUPPRESSIONS,
    )
    # version 0 after run R1, version 1 after run R2 (C5 left, C6 joined)
    write(
        tmp_path,
        "segments.membership",
        [member(c, "R1") for c in ("C5", "C3", "C1", "C4", "C2")] + [member("C1", "R1", segment="cart_abandoners")],
        MEMBERSHIP,
    )
    write(
        tmp_path,
        "segments.membership",
        [member(c, "R1") for c in ("C3", "C1", "C4", "C2")]
        + [member("C5", "R1", current=False), member("C6", "R2"), member("C1", "R1", segment="cart_abandoners")],
        MEMBERSHIP,
        mode="overwrite",
    )
    write(
        tmp_path,
        "segments.runs",
        [
            {
                "run_id": "R1",
                "mode": "batch",
                "as_of": T0,
                "segments": ["vip"],
                "changes": 6,
                "membership_version": 0,
                "applied_at": datetime(2026, 10, 1, 1, tzinfo=timezone.utc),
            },
            {
                "run_id": "R2",
                "mode": "batch",
                "as_of": T0,
                "segments": ["vip"],
                "changes": 2,
                "membership_version": 1,
                "applied_at": datetime(2026, 10, 2, 1, tzinfo=timezone.utc),
            },
            {
                "run_id": "R3",
                "mode": "batch",
                "as_of": T0,
                "segments": ["vip"],
                "changes": 1,
                "membership_version": 1,
                "applied_at": datetime(2026, 10, 3, 1, tzinfo=timezone.utc),
            },
        ],
        RUNS,
    )
    write(
        tmp_path,
        "segments.changes",
        [
            change("c-r1-5", "R1", "C5"),
            change("c-r1-2", "R1", "C2"),
            change("c-r1-1", "R1", "C1"),
            change("c-r1-3", "R1", "C3"),
            change("c-r1-4", "R1", "C4"),
            change("c-r1-9", "R1", "C1", segment="cart_abandoners"),
            change("c-r2-2", "R2", "C6"),
            change("c-r2-1", "R2", "C5", "exited"),
            change("c-r3-1", "R3", "C7"),
            # a run never recorded in segments.runs (killed half way): not served
            change("c-r9-1", "R9", "C7", "exited"),
        ],
        CHANGES,
    )
    write(tmp_path, "segments.approvals", [{"run_id": "R3", "segment_id": "vip", "status": "held"}], APPROVALS)
    running = Service(write_conf(tmp_path)).start()
    yield tmp_path, running
    running.stop()


def ids(page: dict, field: str) -> list[str]:
    return [row["customer_id"] for row in page[field]]


def test_members_as_of_a_run_paged_without_suppressed_people(warehouse):
    _, service = warehouse
    status, _, latest = service.request("GET", "/v1/segments/vip/members", key=PLATFORM)
    assert status == 200
    assert (latest["run_id"], ids(latest, "members"), latest["next_page_token"]) == ("R3", ["C1", "C4", "C6"], None)
    assert latest["members"][0] == {
        "customer_id": "C1",
        "member_key": "",
        "entered_at": "2026-10-01T00:00:00.000000+00:00",
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "X",
    }
    _, _, first = service.request("GET", "/v1/segments/vip/members?run_id=R1&limit=2", key=PLATFORM)
    assert (first["run_id"], ids(first, "members"), first["total"]) == ("R1", ["C1", "C4"], 3)
    _, _, second = service.request(
        "GET", f"/v1/segments/vip/members?limit=2&page_token={first['next_page_token']}", key=PLATFORM
    )
    assert (second["run_id"], ids(second, "members"), second["next_page_token"]) == ("R1", ["C5"], None)
    status, _, answer = service.request("GET", "/v1/segments/vip/members?run_id=R7", key=PLATFORM)
    assert (status, answer["error"]["fields"][0]["field"]) == (404, "run_id")
    status, _, answer = service.request("GET", "/v1/segments/vip/members?page_token=zzz", key=PLATFORM)
    assert (status, answer["error"]["fields"][0]["field"]) == (400, "page_token")
    # well-formed base64 JSON of the wrong shape is the caller's fault too, not a 500
    from lakecdp.api.segments import encode_token

    forged = encode_token({"segment": "vip", "run": "R1", "after": [1, 2]})
    status, _, answer = service.request("GET", f"/v1/segments/vip/members?page_token={forged}", key=PLATFORM)
    assert (status, answer["error"]["fields"][0]["field"]) == (400, "page_token")
    forged = encode_token({"segment": "vip", "run": "R1", "change": 7})
    status, _, answer = service.request("GET", f"/v1/segments/vip/changes?cursor={forged}", key=PLATFORM)
    assert (status, answer["error"]["fields"][0]["field"]) == (400, "cursor")


def test_changes_resume_from_a_cursor_exactly_once_and_wait_for_held_runs(warehouse):
    root, service = warehouse

    def page(cursor=None):
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, _, body = service.request("GET", f"/v1/segments/vip/changes{query}", key=PLATFORM)
        assert status == 200, body
        return [c["change_id"] for c in body["changes"]], body["cursor"]

    first, c1 = page()
    second, c2 = page(c1)
    third, c3 = page(c2)
    fourth, c4 = page(c3)
    assert (first, second, third, fourth) == (["c-r1-1", "c-r1-4"], ["c-r1-5", "c-r2-1"], ["c-r2-2"], [])
    assert c4 == c3
    # the same cursor again: the same rows (a consumer that crashed before saving its cursor)
    assert page(c2) == (["c-r2-2"], c3)
    # R3 was held for approval; once approved its change follows, after everything before
    write(
        root,
        "segments.approvals",
        [{"run_id": "R3", "segment_id": "vip", "status": "approved"}],
        APPROVALS,
        mode="overwrite",
    )
    assert page(c3)[0] == ["c-r3-1"]
    _, _, body = service.request("GET", "/v1/segments/vip/changes", key=PLATFORM)
    assert body["changes"][3] == {
        "change_id": "c-r2-1",
        "run_id": "R2",
        "change_type": "exited",
        "customer_id": "C5",
        "member_key": "",
        "previous_customer_id": None,
        "changed_at": "2026-10-01T00:00:00.000000+00:00",
    }


def test_keys_read_only_their_destinations_segments(warehouse):
    _, service = warehouse
    status, _, body = service.request("GET", "/v1/segments", key=PLATFORM)
    # demo_webhook names vip, cart_abandoners, interested_in_product
    assert [s["id"] for s in body["segments"]] == ["cart_abandoners", "interested_in_product", "vip"]
    status, _, body = service.request("GET", "/v1/segments/churn_risk/members", key=PLATFORM)
    assert (status, body["error"]["fields"][0]["field"]) == (403, "segment_id")
    # demo_export names no segments: every segment
    status, _, body = service.request("GET", "/v1/segments/churn_risk/members", key=READER)
    assert (status, body["members"]) == (200, [])
    status, _, body = service.request("GET", "/v1/segments/cart_abandoners/members", key=READER)
    assert (status, ids(body, "members")) == (200, ["C1"])
    # an intake-only key reads no segment
    assert service.request("GET", "/v1/segments", key=KEYS["website"])[0] == 403
    assert service.request("GET", "/v1/segments")[0] == 401


def _run_row(run_id: str, hour: int) -> dict:
    return {
        "run_id": run_id,
        "mode": "event",
        "as_of": T0,
        "segments": ["vip"],
        "changes": 1,
        "membership_version": 0,
        "applied_at": datetime(2026, 10, 1, hour, tzinfo=timezone.utc),
    }


def test_a_run_recorded_while_changes_are_read_is_served_on_the_next_read(tmp_path):
    """The follow loop records a run (its changes, then segments.runs) while the API answers a
    request. The write is made, with delta-rs, right after the reader takes the first table version
    of the request: whichever order the reader reads in, the next request serves the new change.
    (The runs list read before the versions were taken left R2's change out, cached under the new
    versions, so every later request missed it until the next write: test_api_follow saw [] for 60 s.)"""
    from lakecdp.api.segments import CHANGES as CHANGES_TABLE
    from lakecdp.api.segments import SegmentReader
    from lakecdp.config import load_project

    write(tmp_path, "segments.membership", [member("C1", "R1")], MEMBERSHIP)
    write(tmp_path, "segments.runs", [_run_row("R1", 1)], RUNS)
    write(tmp_path, "segments.changes", [change("c-r1-1", "R1", "C1")], CHANGES)
    project = load_project(write_conf(tmp_path), env="apitest")

    class RacedReader(SegmentReader):
        armed = False

        def _version(self, name):
            version = super()._version(name)
            if self.armed:  # the loop's run lands between two of the request's reads
                self.armed = False
                write(tmp_path, "segments.changes", [change("c-r2-1", "R2", "C2")], CHANGES)
                write(tmp_path, "segments.runs", [_run_row("R2", 2)], RUNS)
            return version

    reader = RacedReader(project)
    assert [c["change_id"] for c in reader.changes("vip")["changes"]] == ["c-r1-1"]
    for name in (CHANGES_TABLE, "segments.runs"):
        assert reader._version(name) == 0
    reader.armed = True
    during = [c["change_id"] for c in reader.changes("vip")["changes"]]
    assert during in (["c-r1-1"], ["c-r1-1", "c-r2-1"])  # before or after the run, never half of it
    assert [c["change_id"] for c in reader.changes("vip")["changes"]] == ["c-r1-1", "c-r2-1"]
