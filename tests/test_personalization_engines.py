"""Template contexts on the embedded engine (DuckDB over delta-rs, no Spark session) against
hand-written contexts, and against the Spark path on the same hand-made warehouse: the same
Python values (types too), so previews and SMS texts render byte for byte alike."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from lakecdp.activation.sms import SmsDestination, sms_texts
from lakecdp.context import JobContext
from lakecdp.delta_store import DeltaStore
from lakecdp.personalization import job
from lakecdp.personalization.config import load_personalization
from lakecdp.personalization.engine import TemplateEngine
from lakecdp.personalization.preview import load_contexts, load_contexts_embedded, render_previews
from lakecdp.tables import Tables
from conftest import on_engine

REPO = Path(__file__).resolve().parents[1]
RECOMMENDATION = pa.struct([("product_id", pa.string()), ("confidence", pa.float64())])


def _write(tables: Tables, name: str, rows: list[dict], schema: pa.Schema) -> None:
    write_deltalake(tables.location(name), pa.Table.from_pylist(rows, schema=schema))


def _warehouse(tables: Tables) -> None:
    """Customers sort c1 < c10 < c2 < c3 (bytes); c10 has no features row."""
    text = pa.string()
    _write(
        tables,
        "gold.customer_profile",
        [
            {"customer_id": "c2", "first_name": None, "last_name": "Ray", "email": "bob@example.com", "country": "GB"},
            {"customer_id": "c1", "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
             "city": "London", "country": "GB"},
            {"customer_id": "c3", "first_name": "Zoë", "last_name": "O'Neil", "email": "zoe@example.com",
             "city": "Zürich", "country": "CH"},
            {"customer_id": "c10", "first_name": "Max", "country": "DE"},
        ],
        pa.schema([(c, text) for c in ("customer_id", "first_name", "last_name", "email", "city", "country")]),
    )  # fmt: skip
    _write(
        tables,
        "gold.customer_features",
        [
            {"customer_id": "c1", "lifecycle_stage": "active", "total_spent": 620.0,
             "recommendations": [("P1", 0.9), ("P2", 0.3), ("P3", 0.85), ("P4", 0.95)]},
            {"customer_id": "c2", "lifecycle_stage": "lapsed", "total_spent": 10.0},
            # a null element and a null confidence are never shown; 0.8 is the cut-off itself
            {"customer_id": "c3", "lifecycle_stage": "new", "total_spent": 0.1 + 0.2, "cart_value": 1e-7,
             "cart_product_ids": ["P2", "P1"], "recommendations": [None, ("P2", None), ("P1", 0.8)]},
        ],
        pa.schema([
            ("customer_id", text), ("lifecycle_stage", text), ("total_spent", pa.float64()),
            ("cart_value", pa.float64()), ("cart_product_ids", pa.list_(text)),
            ("recommendations", pa.list_(RECOMMENDATION)),
        ]),
    )  # fmt: skip
    _write(
        tables,
        "segments.membership",
        [
            {"segment_id": s, "customer_id": c, "member_key": k, "is_current": current}
            for s, c, k, current in [
                ("vip", "c1", "", True),
                ("interested_in_product", "c1", "P3", True),
                ("interested_in_product", "c1", "P1", True),
                ("interested_in_product", "c1", "P1", True),
                ("interested_in_product", "c1", "P9", False),
                ("vip", "c2", "", False),
                ("cart_abandoners", "c3", "", True),
                ("vip", "c3", None, True),
                ("churn_risk", "c10", "", True),
            ]
        ],
        pa.schema([("segment_id", text), ("customer_id", text), ("member_key", text), ("is_current", pa.bool_())]),
    )
    _write(
        tables,
        "silver.products",
        [
            {"product_id": "P1", "name": "Kettle"},
            {"product_id": "P2", "name": "Toaster"},
            {"product_id": "P4", "name": "Mug"},
        ],
        pa.schema([("product_id", text), ("name", text)]),
    )


def _project(project, tmp_path: Path, engine: str):
    """``project`` on ``engine`` with the shipped personalization.yaml, templates from the repo."""
    conf = tmp_path / f"conf_{engine}"
    conf.mkdir(exist_ok=True)
    shipped = (REPO / "conf" / "personalization.yaml").read_text("utf-8")
    (conf / "personalization.yaml").write_text(
        shipped.replace("templates_dir: templates", f"templates_dir: '{REPO / 'templates'}'"), encoding="utf-8"
    )
    return on_engine(project, engine).model_copy(update={"conf_dir": conf})


SMS = SmsDestination.model_validate(
    {
        "version": 1,
        "type": "sms",
        "template": "welcome.sms.txt",
        "campaign": "welcome",
        "gateway": {"url": "https://sms.example.com/v1/messages"},
    }
)


def test_embedded_contexts_by_hand_and_no_spark_session(project, tmp_path):
    _warehouse(Tables(project))
    ctx = JobContext.create(_project(project, tmp_path, "embedded"), run_id="p-1")
    config = load_personalization(ctx.project.conf_dir)
    store = DeltaStore(ctx)

    contexts = load_contexts_embedded(store, config)
    assert contexts == [
        {
            "customer_id": "c1",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
            "city": "London",
            "country": "GB",
            "lifecycle_stage": "active",
            "total_spent": 620.0,
            "segments": ["interested_in_product", "vip"],
            "segment_names": ["Interested in Product X", "VIP"],
            "segment_keys": {"interested_in_product": ["P1", "P3"], "vip": []},
            "customer_segment": "Interested in Product X",
            # in stored order, the first three at or above 0.8; P3 is not in the catalogue
            "recommended_products": [
                {"product_id": "P1", "name": "Kettle", "confidence": 0.9},
                {"product_id": "P3", "confidence": 0.85},
                {"product_id": "P4", "name": "Mug", "confidence": 0.95},
            ],
        },
        {
            "customer_id": "c10",
            "first_name": "Max",
            "country": "DE",
            "segments": ["churn_risk"],
            "segment_names": ["churn_risk"],
            "segment_keys": {"churn_risk": []},
            "customer_segment": "churn_risk",
            "recommended_products": [],
        },
        {
            "customer_id": "c2",
            "last_name": "Ray",
            "email": "bob@example.com",
            "country": "GB",
            "lifecycle_stage": "lapsed",
            "total_spent": 10.0,
            "segments": [],
            "segment_names": [],
            "segment_keys": {},
            "recommended_products": [],
        },
        {
            "customer_id": "c3",
            "first_name": "Zoë",
            "last_name": "O'Neil",
            "email": "zoe@example.com",
            "city": "Zürich",
            "country": "CH",
            "lifecycle_stage": "new",
            "total_spent": 0.30000000000000004,
            "cart_value": 1e-07,
            "cart_products": ["P2", "P1"],
            "segments": ["cart_abandoners", "vip"],
            "segment_names": ["cart_abandoners", "VIP"],
            "segment_keys": {"cart_abandoners": [], "vip": []},
            "customer_segment": "cart_abandoners",
            "recommended_products": [{"product_id": "P1", "name": "Kettle", "confidence": 0.8}],
        },
    ]
    assert type(contexts[0]["total_spent"]) is float and str(contexts[3]["cart_value"]) == "1e-07"
    assert str(contexts[0]["recommended_products"]) == "Kettle, P3, Mug"

    def ids(**options) -> list[str]:
        return [c["customer_id"] for c in load_contexts_embedded(store, config, **options)]

    assert ids(customer_ids=["c3", "c1", "nobody"]) == ["c1", "c3"]
    assert ids(segment="vip") == ["c1", "c3"]  # c2 left vip
    assert ids(limit=2) == ["c1", "c10"]
    assert ids(segment="vip", limit=1) == ["c1"]
    assert ids(segment="nobody_is_in_it") == []

    # the preview step and the SMS texts read the same contexts, and no Spark session starts
    assert job.run(ctx) == {"rendered": 2, "missing_fields": 0, "fallbacks_used": 1}
    html = (ctx.project.warehouse / "previews" / "welcome" / "c1.html").read_text("utf-8")
    assert [line.split(" <small>")[0].strip() for line in html.splitlines() if "<li>" in line] == [
        "<li>Kettle",
        "<li>P3",
        "<li>Mug",
    ]
    texts = sms_texts(ctx, SMS, ["c3"])
    assert texts["c3"].splitlines()[1:] == [
        "As a VIP you get free delivery on every order.",
        "Picked for you: Kettle",
        "Reply STOP to opt out",
    ]
    assert not ctx.session.started

    # without silver.products: every recommendation ranks alike, the most confident first, no names
    shutil.rmtree(Tables(project).location("silver.products"))
    assert str(load_contexts_embedded(store, config, customer_ids=["c1"])[0]["recommended_products"]) == "P4, P1, P3"
    # profiles only
    for name in ("gold.customer_features", "segments.membership"):
        shutil.rmtree(Tables(project).location(name))
    assert load_contexts_embedded(store, config, customer_ids=["c2"]) == [
        {
            "customer_id": "c2",
            "last_name": "Ray",
            "email": "bob@example.com",
            "country": "GB",
            "segments": [],
            "segment_names": [],
            "segment_keys": {},
            "recommended_products": [],
        }
    ]
    assert load_contexts_embedded(store, config, segment="vip") == []


def _typed(value):
    """``value`` with the type of every part, so 1 == 1.0 and a Decimal do not pass for a float.
    Dicts compare by their items (``segment_keys`` has its keys in the order of Spark's shuffle)."""
    if isinstance(value, dict):
        return ("dict", sorted((k, _typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return (type(value).__name__, [_typed(v) for v in value])
    return (type(value).__name__, value)


@pytest.mark.slow  # a dozen Spark jobs: ~30 s on an idle box
@pytest.mark.parametrize("products", [True, False], ids=["with_products", "without_products"])
def test_both_engines_give_the_same_contexts_previews_and_sms(spark, project, tmp_path, products):
    tables = Tables(project)
    _warehouse(tables)
    if not products:
        shutil.rmtree(tables.location("silver.products"))
    embedded = JobContext.create(_project(project, tmp_path, "embedded"), run_id="p-1")
    on_spark = JobContext.create(_project(project, tmp_path, "spark"), spark, run_id="p-1")
    config = load_personalization(embedded.project.conf_dir)
    store = DeltaStore(embedded)

    contexts = {}
    for options in ({}, {"customer_ids": ["c3", "c1"]}, {"segment": "vip"}, {"limit": 2}):
        mine = load_contexts_embedded(store, config, campaign_id="welcome", **options)
        spark_side = load_contexts(spark, tables, config, campaign_id="welcome", **options)
        assert [_typed(c) for c in mine] == [_typed(c) for c in spark_side], options
        assert [list(c) for c in mine] == [list(c) for c in spark_side]
        if not options:
            contexts = {"embedded": mine, "spark": spark_side}

    engine = TemplateEngine(REPO / "templates", feedback_url=config.feedback_url)
    for name in engine.template_names():
        rendered = {
            side: [f.path.read_bytes() for f in render_previews(engine, name, found, output_dir=tmp_path / side)]
            for side, found in contexts.items()
        }
        assert rendered["embedded"] == rendered["spark"], name
    ids = ["c1", "c10", "c2", "c3"]
    assert sms_texts(embedded, SMS, ids) == sms_texts(on_spark, SMS, ids)
    assert not embedded.session.started
