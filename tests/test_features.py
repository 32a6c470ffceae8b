"""Feature transforms on inline DataFrames: input next to hand-computed expected output."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pyspark.testing import assertDataFrameEqual

from lakecdp.config import ConfigError, load_model
from lakecdp.columns import MissingColumnsError
from lakecdp.features import (
    LifecycleRuleError,
    attach_customer_id,
    cart_state,
    category_affinities,
    engagement,
    lifecycle_stage,
    load_features_config,
    product_interest,
    recommendations,
    rfm,
    unmatched_rows,
)
from lakecdp.features.config import FeaturesConfig, RecommendationConfig, RfmConfig

from conftest import REPO_ROOT

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)


def t(text: str) -> datetime:
    """'2026-10-31 22:30' as an aware UTC datetime."""
    fmt = "%Y-%m-%d %H:%M" if " " in text else "%Y-%m-%d"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)


EVENT_DDL = (
    "customer_id string, event_type string, occurred_at timestamp, product_id string, category string, value double"
)


def events(spark, rows):
    """(customer_id, event_type, occurred_at, product_id, category, value) rows."""
    return spark.createDataFrame([(c, e, t(ts), p, cat, v) for c, e, ts, p, cat, v in rows], EVENT_DDL)


def test_attach_customer_id_precedence_and_unmatched(spark):
    identifiers = spark.createDataFrame(
        [
            ("customer_number", "S1", "c1"),
            ("email", "ann@x.com", "c2"),
            ("device_id", "d-1", "c3"),
            ("email", "bob@x.com", "c4"),
            ("device_id", "d-9", "c5"),
        ],
        "identifier_type string, identifier_value string, customer_id string",
    )
    raw = spark.createDataFrame(
        [
            # event_id, customer_number, email, device_id  -> expected customer
            ("e1", "S1", "ann@x.com", "d-1"),  # c1: customer number wins
            ("e2", None, " Ann@X.com ", "d-1"),  # c2: email (normalised) beats device
            ("e3", None, None, "d-1"),  # c3: device only
            ("e4", "S404", "bob@x.com", None),  # c4: unknown number falls through to email
            ("e5", None, "nobody@x.com", "d-404"),  # no match
            ("e6", None, None, None),  # no identifier at all
        ],
        "event_id string, customer_number string, email string, device_id string",
    )
    assertDataFrameEqual(
        attach_customer_id(raw, identifiers).select("event_id", "customer_id"),
        spark.createDataFrame(
            [("e1", "c1"), ("e2", "c2"), ("e3", "c3"), ("e4", "c4")],
            "event_id string, customer_id string",
        ),
    )
    assertDataFrameEqual(
        unmatched_rows(raw, identifiers).select("event_id"),
        spark.createDataFrame([("e5",), ("e6",)], "event_id string"),
    )
    # orders have no device id: the other identifiers still resolve them
    orders = spark.createDataFrame(
        [("o1", "S1", "bob@x.com"), ("o2", None, "bob@x.com")],
        "order_id string, customer_number string, email string",
    )
    assertDataFrameEqual(
        attach_customer_id(orders, identifiers).select("order_id", "customer_id"),
        spark.createDataFrame([("o1", "c1"), ("o2", "c4")], "order_id string, customer_id string"),
    )
    with pytest.raises(MissingColumnsError, match=r"identifiers is missing columns \['customer_id'\]"):
        attach_customer_id(raw, identifiers.drop("customer_id"))
    with pytest.raises(ValueError, match="need at least one of the columns"):
        attach_customer_id(raw.select("event_id"), identifiers)


ORDER_DDL = "customer_id string, order_id string, ordered_at timestamp, status string, total double"
RFM_DDL = (
    "customer_id string, recency_days int, frequency int, monetary double, r_score int, "
    "f_score int, m_score int, rfm_score string, total_spent double, order_count int, "
    "avg_order_value double, first_purchase_at timestamp, last_purchase_at timestamp"
)


def test_rfm_fixed_bins_completed_orders_only_and_point_in_time(spark):
    orders = spark.createDataFrame(
        [
            (c, o, t(ts), s, total)
            for c, o, ts, s, total in [
                ("c1", "o1", "2026-10-21 12:00", "completed", 100.0),
                ("c1", "o2", "2026-09-01 00:00", "completed", 60.5),
                ("c1", "o3", "2026-10-30 00:00", "cancelled", 999.0),
                ("c1", "o4", "2026-10-31 00:00", "refunded", 500.0),
                ("c1", "o5", "2026-11-02 00:00", "completed", 1000.0),  # after as_of
                ("c2", "o6", "2025-06-01 00:00", "completed", 40.0),  # outside the 365-day window
                ("c2", "o7", "2026-06-01 00:00", "completed", 20.0),
                ("c3", "o8", "2026-10-01 00:00", "cancelled", 80.0),  # never completed: no row
                ("c4", "o9", "2024-01-01 00:00", "completed", 400.0),
                ("c4", "o10", "2024-01-01 00:00", "completed", 400.0),
                ("c4", "o11", "2024-01-01 00:00", "completed", 400.0),
            ]
        ],
        ORDER_DDL,
    )
    config = RfmConfig()  # recency [30,90,180,365], frequency [2,3,5,10], monetary [50,150,500,1000]
    assertDataFrameEqual(
        rfm(orders, as_of=AS_OF, config=config),
        spark.createDataFrame(
            [
                # 10.5 days -> 10 -> r5; 2 orders -> f2; 160.5 -> m3
                ("c1", 10, 2, 160.5, 5, 2, 3, "523", 160.5, 2, 80.25, t("2026-09-01"), t("2026-10-21 12:00")),
                # 153 days -> r3; one order in window -> f1; 20.0 -> m1
                ("c2", 153, 1, 20.0, 3, 1, 1, "311", 60.0, 2, 30.0, t("2025-06-01"), t("2026-06-01")),
                # 366 + 365 + 304 days; nothing in the window
                ("c4", 1035, 0, 0.0, 1, 1, 1, "111", 1200.0, 3, 400.0, t("2024-01-01"), t("2024-01-01")),
            ],
            RFM_DDL,
        ),
    )
    # recomputed as of 1 October: o1 (21 Oct) and everything later do not exist yet
    assertDataFrameEqual(
        rfm(orders, as_of=t("2026-10-01"), config=config).where("customer_id = 'c1'"),
        spark.createDataFrame(
            [("c1", 30, 1, 60.5, 5, 1, 2, "512", 60.5, 1, 60.5, t("2026-09-01"), t("2026-09-01"))],
            RFM_DDL,
        ),
    )


def test_engagement_windows_and_activity(spark):
    ev = events(
        spark,
        [
            ("c1", "email_open", "2026-10-31 08:00", None, None, None),  # 0.67 days: 7/30/90
            ("c1", "email_open", "2026-10-20 00:00", None, None, None),  # 12 days: 30/90
            ("c1", "email_open", "2026-09-15 00:00", None, None, None),  # 47 days: 90
            ("c1", "email_open", "2026-07-01 00:00", None, None, None),  # 123 days: none
            ("c1", "email_click", "2026-10-29 00:00", None, None, None),  # 3 days: 7/30/90
            ("c1", "email_click", "2026-08-10 00:00", None, None, None),  # 83 days: 90
            ("c1", "email_send", "2026-10-31 23:00", None, None, None),  # done to them: not activity
            ("c1", "page_view", "2026-10-25 00:00", None, None, None),
            ("c1", "email_open", "2026-11-05 00:00", None, None, None),  # after as_of
            ("c2", "email_open", "2026-10-25 00:00", None, None, None),  # exactly 7 days: 30/90 only
            ("c2", "email_send", "2026-10-30 00:00", None, None, None),
            ("c2", "page_view", "2026-10-01 00:00", None, None, None),
            ("c3", "email_bounce", "2026-10-30 00:00", None, None, None),
        ],
    )
    assertDataFrameEqual(
        engagement(ev, as_of=AS_OF),
        spark.createDataFrame(
            [
                ("c1", 1, 2, 3, 1, 1, 2, t("2026-10-31 08:00"), t("2026-10-31 08:00")),
                ("c2", 0, 1, 1, 0, 0, 0, t("2026-10-25 00:00"), t("2026-10-25 00:00")),
                ("c3", 0, 0, 0, 0, 0, 0, None, None),
            ],
            "customer_id string, opens_7d int, opens_30d int, opens_90d int, clicks_7d int, "
            "clicks_30d int, clicks_90d int, last_engagement_at timestamp, last_activity_at timestamp",
        ),
    )


def test_lifecycle_rules_from_conf_first_match_wins(spark, tmp_path):
    config = load_features_config(REPO_ROOT / "conf" / "features.yaml")
    features = spark.createDataFrame(
        [
            # customer, as_of, order_count, first_purchase_at, frequency, recency_days -> stage
            ("a", AS_OF, 1, t("2026-10-20"), 1, 12),  # new: first purchase 12 days ago
            ("b", AS_OF, 8, t("2025-01-01"), 6, 10),  # loyal
            ("c", AS_OF, 3, t("2025-01-01"), 2, 60),  # active
            ("d", AS_OF, 2, t("2025-01-01"), 1, 120),  # at_risk
            ("e", AS_OF, 2, t("2024-01-01"), 0, 400),  # churned
            ("f", AS_OF, 0, None, 0, None),  # never bought: default
            ("g", AS_OF, 9, t("2025-01-01"), 6, 100),  # frequent but 100 days quiet: at_risk
        ],
        "customer_id string, as_of timestamp, order_count int, first_purchase_at timestamp, "
        "frequency int, recency_days int",
    )
    assertDataFrameEqual(
        lifecycle_stage(features, config=config.lifecycle).select("customer_id", "lifecycle_stage"),
        spark.createDataFrame(
            [
                ("a", "new"),
                ("b", "loyal"),
                ("c", "active"),
                ("d", "at_risk"),
                ("e", "churned"),
                ("f", "prospect"),
                ("g", "at_risk"),
            ],
            "customer_id string, lifecycle_stage string",
        ),
    )
    with pytest.raises(
        LifecycleRuleError, match=r"lifecycle.rules\[1\] \(loyal\).*unknown column\(s\) \['frequency'\]"
    ):
        lifecycle_stage(features.drop("frequency"), config=config.lifecycle)

    bad = tmp_path / "features.yaml"
    bad.write_text("version: 1\nlifecycle:\n  rules:\n    - stage: x\n      condition: '(select 1) > 0'\n")
    with pytest.raises(ConfigError, match=r"features.yaml: lifecycle.rules\[0\].condition: .*query"):
        load_model(bad, FeaturesConfig)
    bad.write_text("version: 1\nlifecycle:\n  rules: [{stage: x, condition: 'a > 1'}]\ncart: {abandon_after: 5}\n")
    with pytest.raises(ConfigError, match=r"cart.abandon_after: Extra inputs are not permitted"):
        load_model(bad, FeaturesConfig)


def test_category_affinities_decay_and_normalise(spark):
    ev = events(
        spark,
        [
            ("c1", "product_view", "2026-11-01 00:00", "P1", "shoes", None),  # age 0: 1.0
            ("c1", "product_view", "2026-10-25 00:00", "P2", "shoes", None),  # one half-life: 0.5
            ("c1", "product_view", "2026-10-18 00:00", "P3", "bags", None),  # two half-lives: 0.25
            ("c1", "product_view", "2026-11-03 00:00", "P3", "bags", None),  # after as_of
            ("c1", "page_view", "2026-10-31 00:00", None, None, None),
        ],
    )
    items = spark.createDataFrame(
        [
            ("c1", t("2026-10-25"), "hats", 2),  # 3.0 per unit * 2 * 0.5 = 3.0
            ("c2", t("2026-11-01"), "bags", 1),
        ],
        "customer_id string, ordered_at timestamp, category string, quantity int",
    )
    total = 1.0 + 0.5 + 0.25 + 3.0
    assertDataFrameEqual(
        category_affinities(ev, items, as_of=AS_OF, half_life_days=7, view_weight=1.0, purchase_weight=3.0),
        spark.createDataFrame(
            [
                ("c1", {"bags": 0.25 / total, "hats": 3.0 / total, "shoes": 1.5 / total}),
                ("c2", {"bags": 1.0}),
            ],
            "customer_id string, category_affinities map<string,double>",
        ),
    )


def test_product_interest_recent_views_and_trending(spark):
    ev = events(
        spark,
        [
            ("c1", "product_view", "2026-10-31 10:00", "P1", "shoes", None),
            ("c1", "product_view", "2026-10-31 05:00", "P8", "toys", None),
            ("c1", "product_view", "2026-10-30 05:00", "P8", "toys", None),
            ("c1", "product_view", "2026-10-30 00:00", "P2", "shoes", None),
            ("c1", "product_view", "2026-10-29 00:00", "P1", "shoes", None),  # older view of P1
            ("c1", "product_view", "2026-10-28 00:00", "P3", "bags", None),
            ("c1", "product_view", "2026-10-27 00:00", "P4", "bags", None),
            ("c1", "product_view", "2026-10-26 00:00", "P7", "hats", None),  # 1 recent view: too few
            ("c1", "product_view", "2026-10-20 00:00", "P5", "bags", None),  # bags baseline 3 views
            ("c1", "product_view", "2026-10-10 00:00", "P5", "bags", None),
            ("c1", "product_view", "2026-10-02 00:00", "P5", "bags", None),
            ("c1", "product_view", "2026-09-01 00:00", "P5", "bags", None),  # before the baseline
            ("c1", "product_view", "2026-11-02 00:00", "P9", "toys", None),  # after as_of
            ("c2", "product_view", "2026-10-01 00:00", "P1", "shoes", None),
            ("c3", "page_view", "2026-10-31 00:00", None, None, None),  # no product views: no row
        ],
    )
    # lift 3: shoes 3/7 > 0, toys 2/7 > 0, bags 2/7 = 0.286 < 3 * 3/30 = 0.3
    assertDataFrameEqual(
        product_interest(ev, as_of=AS_OF, recent_views_limit=3, trend_min_lift=3.0),
        spark.createDataFrame(
            [("c1", ["P1", "P8", "P2"], ["shoes", "toys"]), ("c2", ["P1"], [])],
            "customer_id string, recent_product_views array<string>, trending_interests array<string>",
        ),
    )


def test_cart_state_open_closed_and_abandoned(spark):
    ev = events(
        spark,
        [
            ("c1", "add_to_cart", "2026-10-31 22:00", "P1", None, 10.0),
            ("c1", "add_to_cart", "2026-10-31 22:10", "P2", None, 5.0),
            ("c1", "add_to_cart", "2026-10-31 22:20", "P1", None, 12.0),  # 2 x P1 at the latest price
            ("c1", "checkout", "2026-10-31 22:25", None, None, None),  # starts checkout only
            ("c1", "remove_from_cart", "2026-10-31 22:30", "P2", None, 5.0),
            ("c2", "add_to_cart", "2026-10-31 09:00", "P3", None, 20.0),
            ("c2", "purchase", "2026-10-31 09:30", None, None, 20.0),  # empties the cart
            ("c2", "add_to_cart", "2026-10-31 23:30", "P4", None, 7.5),  # 30 min ago: not abandoned
            ("c3", "add_to_cart", "2026-10-30 10:00", "P5", None, 9.0),
            ("c3", "purchase", "2026-10-30 11:00", None, None, 9.0),  # nothing after: no row
            ("c4", "add_to_cart", "2026-10-30 10:00", "P6", None, 4.0),
            ("c4", "remove_from_cart", "2026-10-30 10:05", "P6", None, 4.0),
            ("c5", "add_to_cart", "2026-10-31 20:00", "P7", None, 3.0),
            ("c5", "purchase", "2026-11-01 05:00", None, None, 3.0),  # after as_of: cart still open
        ],
    )
    assertDataFrameEqual(
        cart_state(ev, as_of=AS_OF, abandon_after_minutes=60),
        spark.createDataFrame(
            [
                ("c1", True, 24.0, ["P1"], t("2026-10-31 22:30")),
                ("c2", True, 7.5, ["P4"], None),
                ("c4", False, 0.0, [], None),
                ("c5", True, 3.0, ["P7"], t("2026-10-31 20:00")),
            ],
            "customer_id string, cart_open boolean, cart_value double, "
            "cart_product_ids array<string>, cart_abandoned_at timestamp",
        ),
    )


def test_recommendations_confidence_support_and_exclusions(spark):
    views = [("u1", "A"), ("u1", "B"), ("u1", "C"), ("u2", "A"), ("u2", "B"), ("u3", "A"), ("u3", "C"), ("u4", "B")]
    ev = events(
        spark,
        [(c, "product_view", "2026-10-20 00:00", p, None, None) for c, p in views]
        + [
            ("u6", "product_view", "2026-11-02 00:00", "A", None, None),  # after as_of
            ("u7", "product_view", "2026-01-01 00:00", "A", None, None),  # outside the 180-day lookback
            ("u7", "product_view", "2026-01-01 00:00", "B", None, None),
        ],
    )
    items = spark.createDataFrame(
        [(c, t("2026-10-15"), p) for c, p in [("u1", "D"), ("u1", "E"), ("u2", "D"), ("u2", "E"), ("u5", "D")]],
        "customer_id string, ordered_at timestamp, product_id string",
    )
    # co-view: A 3 viewers, B 3, C 2; A&B 2, A&C 2, B&C 1 (< min support 2)
    #   A->B 2/3, B->A 2/3, A->C 2/3, C->A 2/2
    # co-purchase: D 3 buyers, E 2; D&E 2 -> D->E 2/3, E->D 1
    config = RecommendationConfig(top_n=2, min_support=2, min_confidence=0.0, lookback_days=180)
    two_thirds = 2 / 3
    assertDataFrameEqual(
        recommendations(ev, items, as_of=AS_OF, config=config),
        spark.createDataFrame(
            [
                ("u1", [("A", 1.0), ("B", two_thirds)]),  # D, E bought: excluded
                ("u2", [("A", two_thirds), ("B", two_thirds)]),  # A, B, C tie: by product id
                ("u3", [("A", 1.0), ("B", two_thirds)]),
                ("u4", [("A", two_thirds)]),
                ("u5", [("E", two_thirds)]),
            ],
            "customer_id string, recommendations array<struct<product_id:string,confidence:double>>",
        ),
    )


def test_features_cli_parses_as_of():
    from lakecdp.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["features", "--as-of", "2026-10-01"])
    assert args.as_of == datetime(2026, 10, 1, tzinfo=timezone.utc)
    assert parser.parse_args(["features", "--as-of", "2026-10-01T12:30:00Z"]).as_of == datetime(
        2026, 10, 1, 12, 30, tzinfo=timezone.utc
    )
    assert parser.parse_args(["features"]).as_of is None
    with pytest.raises(SystemExit):
        parser.parse_args(["features", "--as-of", "yesterday"])
