"""The feedback loop on real Delta tables: a feedback link click in the email platform's export
(and a "feedback" event as the HTTP intake takes it) goes through ingest into silver.events, the
features step drops that product (category) from the customer's recommendations for the
configured period, and the next preview and the next SMS delivery payload no longer show it.

The steps run on the embedded engine (``engine: embedded``, the one a single machine runs): the
loop is the subject here, not Spark, and tests/test_ingest_engines.py (feedback links),
tests/test_features_engines.py (feedback events) and the parity tier show Spark writes the same
rows; the checks read the tables back through Spark."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakecdp.activation import job as activation
from conftest import on_engine
from tests.support.fault_server import FaultServer
from lakecdp.api.validation import validate_event
from lakecdp.context import JobContext
from lakecdp.features import job as features
from lakecdp.ingest.job import ingest
from lakecdp.ingest.schemas import SILVER_SCHEMAS
from lakecdp.ingest.sources import load_sources
from lakecdp.personalization.config import load_personalization
from lakecdp.personalization.engine import TemplateEngine
from lakecdp.personalization.preview import load_contexts, render_previews
from lakecdp.segments.definitions import load_segments
from lakecdp.segments.inspect import explain
from lakecdp.segments.job import load_inputs
from lakecdp.tables import Tables

REPO = Path(__file__).resolve().parents[1]
AS_OF = datetime(2026, 11, 1)
NOON = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc)  # no quiet hours in London


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _project(project, tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    shutil.rmtree(conf / "destinations")
    (conf / "destinations").mkdir()
    (conf / "destinations" / "text.yaml").write_text(
        "version: 1\ntype: sms\ntemplate: welcome.sms.txt\nmax_segments: 3\n"
        "gateway: {url: '${TEST_SMS_URL}', allow_private_network: true, timeout_seconds: 5,\n"
        "          retry: {max_attempts: 2, base_delay_seconds: 0.01}}\n",
        encoding="utf-8",
    )
    shutil.copytree(REPO / "templates", project.root / "templates")
    return project.model_copy(update={"conf_dir": conf})


def _land(project, relative: str, lines: list[str]) -> None:
    path = project.landing / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_tables(spark, tables: Tables) -> None:
    tables.append(
        spark.createDataFrame(
            [
                ("email", "ann@x.com", "c1", "r0"),
                ("email", "ann.work@x.com", "c1", "r0"),
                ("email", "bob@x.com", "c2", "r0"),
                ("email", "cy@x.com", "c3", "r0"),
                ("email", "dee@x.com", "c4", "r0"),
                ("email", "eve@x.com", "c5", "r0"),
            ],
            "identifier_type string, identifier_value string, customer_id string, run_id string",
        ),
        "identity.identifiers",
    )
    tables.append(
        spark.createDataFrame(
            [
                ("P1", "Kettle", "home", 30.0),
                ("P2", "Toaster", "kitchen", 25.0),
                ("P3", "Candle", "home", 12.0),
            ],
            SILVER_SCHEMAS["products"],
        ),
        "silver.products",
    )
    # Bob and Cy bought all three: every co-purchase rule between them has confidence 2/2 = 1
    tables.append(
        spark.createDataFrame(
            [
                ("o2", "shop_orders", None, "bob@x.com", utc("2026-10-10 09:00"), "completed", "GBP", 67.0, "r0", None),
                ("o3", "shop_orders", None, "cy@x.com", utc("2026-10-11 09:00"), "completed", "GBP", 67.0, "r0", None),
            ],
            SILVER_SCHEMAS["orders"],
        ),
        "silver.orders",
    )
    tables.append(
        spark.createDataFrame(
            [(o, n, p, None, 1, 10.0) for o in ("o2", "o3") for n, p in enumerate(("P1", "P2", "P3"), start=1)],
            SILVER_SCHEMAS["order_items"],
        ),
        "silver.order_items",
    )
    tables.append(
        spark.createDataFrame(
            [
                (
                    "c1",
                    "Ann",
                    "Lee",
                    "ann@x.com",
                    "+447700900001",
                    None,
                    None,
                    "London",
                    "GB",
                    True,
                    ["ann@x.com", "ann.work@x.com"],
                    ["+447700900001"],
                    utc("2026-10-01 00:00"),
                ),
            ],
            "customer_id string, first_name string, last_name string, email string, phone string, "
            "date_of_birth date, postcode string, city string, country string, email_consent boolean, "
            "emails array<string>, phones array<string>, updated_at timestamp",
        ),
        "gold.customer_profile",
    )
    tables.append(
        spark.createDataFrame(
            [
                ("shop:1", "shop_customers", "ann@x.com", "+447700900001", True, utc("2026-10-01 00:00"), True),
            ],
            "record_id string, source string, email string, phone string, email_consent boolean, "
            "updated_at timestamp, sms_consent boolean",
        ),
        "silver.customer_records",
    )
    tables.append(spark.createDataFrame([("shop:1", "c1")], "record_id string, customer_id string"), "identity.id_map")


def _change(spark, tables: Tables, change_id: str, segment_id: str) -> None:
    tables.append(
        spark.createDataFrame(
            [(change_id, "seg-" + change_id, segment_id, "c1", "", "entered", None, utc("2026-10-31 00:00"), "{}")],
            "change_id string, run_id string, segment_id string, customer_id string, member_key string, "
            "change_type string, previous_customer_id string, changed_at timestamp, reason string",
        ),
        "segments.changes",
    )


def _recommendations(spark, tables: Tables) -> dict[str, list[str]]:
    rows = (
        tables.read(spark, "gold.customer_features")
        .select("customer_id", F.transform("recommendations", lambda r: r["product_id"]).alias("products"))
        .collect()
    )
    return {r["customer_id"]: r["products"] for r in rows}


def _preview(spark, project, tables: Tables, tmp_path, name: str) -> tuple[str, str]:
    config = load_personalization(project.conf_dir)
    engine = TemplateEngine(project.root / "templates", feedback_url=config.feedback_url)
    contexts = load_contexts(spark, tables, config, customer_ids=["c1"])
    texts = []
    for template in ("welcome.txt", "welcome.html"):
        [preview] = render_previews(engine, template, contexts, output_dir=tmp_path / name)
        texts.append(preview.path.read_text(encoding="utf-8"))
    return texts[0], texts[1]


def _sent_texts(server: FaultServer) -> list[tuple[str, str]]:
    return [(item["change_id"], item["text"]) for request in server.received for item in request["items"]]


@pytest.mark.slow
def test_feedback_removes_the_product_from_the_next_preview_and_delivery(spark, project, tmp_path, monkeypatch):
    project = on_engine(_project(project, tmp_path), "embedded")
    tables = Tables(project)
    _write_tables(spark, tables)
    ctx = lambda run_id: JobContext.create(project, spark, as_of=AS_OF, run_id=run_id)  # noqa: E731

    # Ann, Dee and Eve viewed the kettle: Bob's and Cy's baskets recommend the toaster and the candle
    _land(
        project,
        "web_events/web_events_0.jsonl",
        [
            json.dumps(
                {
                    "event_id": f"w{n}",
                    "event_type": "product_view",
                    "ts": "2026-10-25T10:00:00Z",
                    "user": {"email": email},
                    "product_id": "P1",
                    "price": 30.0,
                }
            )
            for n, email in enumerate(("ann@x.com", "dee@x.com", "eve@x.com"), start=1)
        ],
    )
    ingest(ctx("ingest-1"), only=["web_events"])
    features.run(ctx("features-1"))
    assert _recommendations(spark, tables) == {
        "c1": ["P2", "P3"],
        "c2": [],
        "c3": [],
        "c4": ["P2", "P3"],
        "c5": ["P2", "P3"],
    }
    text, html = _preview(spark, project, tables, tmp_path, "before")
    assert "Picked for you: Toaster, Candle\n" in text
    assert 'href="https://shop.example.com/feedback?lakecdp_feedback=not_interested.p.P2"' in html

    with FaultServer() as server:
        monkeypatch.setenv("TEST_SMS_URL", server.url)
        _change(spark, tables, "ch1", "vip")
        activation.run(ctx("act-1"), now=NOON)
        server.wait_idle()
        assert _sent_texts(server) == [
            ("ch1", "Hi Ann, thanks for being with us.\nPicked for you: Toaster, Candle\nReply STOP to opt out")
        ]

        # the email platform's export: Ann clicked "not for me" on the toaster from her work address
        # (linked to her in the identity graph); Dee said the kitchen category is wrong for her,
        # posted as the HTTP intake takes it (event_type feedback); Eve's feedback is 104 days old
        # (past the 90-day feedback_suppression_days); Bob's click is an ordinary click
        feedback = "https://shop.example.com/feedback?lakecdp_feedback="
        _land(
            project,
            "email_events/email_events_0.csv",
            [
                "event_id,event_type,email,campaign_id,occurred_at,bounce_type,url",
                f"m1,click,ann.work@x.com,welcome,2026-10-31T10:00:00Z,,{feedback}not_interested.p.P2",
                f"m2,feedback,dee@x.com,,2026-10-31T11:00:00Z,,{feedback}wrong_recommendation.c.kitchen",
                f"m3,click,eve@x.com,welcome,2026-07-20T10:00:00Z,,{feedback}not_interested.p.P2",
                "m4,click,bob@x.com,welcome,2026-10-31T12:00:00Z,,https://shop.example.com/c/home?utm_campaign=welcome",
                # not a feedback token (unknown reason): an ordinary click
                f"m5,click,bob@x.com,welcome,2026-10-31T12:05:00Z,,{feedback}meh.p.P1",
            ],
        )
        ingest(ctx("ingest-2"), only=["email_events"])
        assertDataFrameEqual(
            tables.read(spark, "silver.events")
            .where(F.col("source") == "email_events")
            .select("event_id", "event_type", "email", "product_id", "category"),
            [
                ("m1", "feedback_not_interested", "ann.work@x.com", "P2", None),
                ("m2", "feedback_wrong_recommendation", "dee@x.com", None, "kitchen"),
                ("m3", "feedback_not_interested", "eve@x.com", "P2", None),
                ("m4", "email_click", "bob@x.com", None, None),
                ("m5", "email_click", "bob@x.com", None, None),
            ],
        )

        features.run(ctx("features-2"))
        assert _recommendations(spark, tables) == {"c1": ["P3"], "c2": [], "c3": [], "c4": ["P3"], "c5": ["P2", "P3"]}
        feedback_rows = {
            r["customer_id"]: [tuple(f) for f in r["recommendation_feedback"]]
            for r in tables.read(spark, "gold.customer_features").collect()
        }
        naive = lambda text: datetime.fromisoformat(text)  # noqa: E731 - Spark returns session-zone (UTC) naive
        assert feedback_rows == {
            "c1": [("P2", None, "not_interested", naive("2026-10-31 10:00"), naive("2027-01-29 10:00"))],
            "c2": [],
            "c3": [],
            "c4": [(None, "kitchen", "wrong_recommendation", naive("2026-10-31 11:00"), naive("2027-01-29 11:00"))],
            "c5": [],
        }
        # `lakecdp segments explain` shows the feedback in force beside the segment checks
        explained = explain(
            ctx("explain"),
            load_segments(project.conf_dir / "segments"),
            load_inputs(ctx("explain")),
            customer_id="c1",
            segment_id="vip",
        )
        assert explained["recommendation_feedback"] == [
            {
                "product_id": "P2",
                "category": None,
                "reason": "not_interested",
                "given_at": "2026-10-31 10:00:00",
                "suppressed_until": "2027-01-29 10:00:00",
            }
        ]
        text, html = _preview(spark, project, tables, tmp_path, "after")
        assert "Picked for you: Candle\n" in text
        assert "Toaster" not in text and "Toaster" not in html
        assert 'href="https://shop.example.com/feedback?lakecdp_feedback=not_interested.p.P3"' in html

        _change(spark, tables, "ch2", "newsletter")
        activation.run(ctx("act-2"), now=NOON)
        server.wait_idle()
        assert _sent_texts(server)[1:] == [
            ("ch2", "Hi Ann, thanks for being with us.\nPicked for you: Candle\nReply STOP to opt out")
        ]


def test_the_http_intake_accepts_feedback_events_by_the_same_rules():
    source = load_sources(REPO / "conf")["email_events"]
    event = {
        "event_id": "m9",
        "event_type": "feedback",
        "email": "ann@x.com",
        "occurred_at": "2026-10-31T10:00:00Z",
        "url": "https://shop.example.com/feedback?lakecdp_feedback=not_interested.p.P2",
    }
    assert validate_event(event, source, as_of=datetime(2026, 11, 1, tzinfo=timezone.utc)) == []
    problems = validate_event(
        {**event, "email": "not an email"}, source, as_of=datetime(2026, 11, 1, tzinfo=timezone.utc)
    )
    assert [(p.code, p.field) for p in problems] == [("INVALID_EMAIL", "email")]


def test_recommendations_leave_out_products_and_categories_with_feedback_in_force(spark):
    from lakecdp.features.config import RecommendationConfig
    from lakecdp.features.recommend import recommendation_feedback, recommendations

    as_of = datetime(2026, 11, 1, tzinfo=timezone.utc)

    def event(customer, kind, when, product=None, category=None):
        return (customer, kind, utc(when), product, category)

    ev = spark.createDataFrame(
        [event(c, "product_view", "2026-10-20 00:00", "A", "home") for c in ("u3", "u4", "u5", "u6", "u7")]
        + [event("u8", "product_view", "2026-10-20 00:00", "B", "kitchen")]
        + [
            event("u3", "feedback_not_interested", "2026-10-30 00:00", "B", "kitchen"),  # product (catalog filled)
            event("u4", "feedback_wrong_recommendation", "2026-10-30 00:00", None, "kitchen"),  # category
            event("u5", "feedback_not_interested", "2026-07-24 00:00", "B"),  # 100 days old: expired (90)
            event("u6", "feedback_not_interested", "2026-11-02 00:00", "B"),  # after as_of
            event("u7", "feedback_not_interested", "2026-10-30 00:00", None, "home"),
            event("u8", "feedback_not_interested", "2026-10-30 00:00", "C", "home"),  # only C, not 'home'
        ],
        "customer_id string, event_type string, occurred_at timestamp, product_id string, category string",
    )
    # u1 and u2 bought A, B and C: every co-purchase rule among them has confidence 2/2
    items = spark.createDataFrame(
        [
            (c, utc("2026-10-15 00:00"), p, cat)
            for c in ("u1", "u2")
            for p, cat in (("A", "home"), ("B", "kitchen"), ("C", "home"))
        ],
        "customer_id string, ordered_at timestamp, product_id string, category string",
    )
    config = RecommendationConfig(
        top_n=5, min_support=2, min_confidence=0.0, lookback_days=180, feedback_suppression_days=90
    )
    got = {
        r["customer_id"]: [p["product_id"] for p in r["recommendations"]]
        for r in recommendations(ev, items, as_of=as_of, config=config).collect()
    }
    assert got == {
        "u3": ["C"],  # B: not interested
        "u4": ["C"],  # B is kitchen
        "u5": ["B", "C"],  # the feedback ran out on 22 Oct
        "u6": ["B", "C"],  # the feedback is after as_of
        "u7": ["B"],  # C is home
        "u8": ["A"],  # viewed B: offered A and C; C suppressed, A (also home) stays
    }
    assertDataFrameEqual(
        recommendation_feedback(ev, as_of=as_of, suppression_days=90).where(F.col("customer_id") == "u3"),
        [("u3", "B", None, "not_interested", datetime(2026, 10, 30), datetime(2027, 1, 28))],
    )
