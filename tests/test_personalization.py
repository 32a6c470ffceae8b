"""Personalisation: sandboxed rendering, segment blocks, fallbacks, recommendations cut-off,
A/B variants, validation with line numbers (pure Python, no Spark)."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import UndefinedError

from lakecdp.personalization.config import Campaign, PersonalizationConfig
from lakecdp.personalization.customers import template_context
from lakecdp.personalization.engine import TemplateEngine
from lakecdp.personalization.preview import validate_templates
from lakecdp.personalization.variants import assign_variant

REPO_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
CONFIG = PersonalizationConfig(
    segment_names={"interested_in_product": "Interested in Product X", "vip": "VIP"},
    segment_priority=["interested_in_product", "vip"],
    campaigns={"welcome": Campaign(variants={"A": 1, "B": 1}, holdout_percent=10)},
)


def _row(**overrides):
    row = {
        "customer_id": "c1",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "city": "London",
        "country": "GB",
        "lifecycle_stage": "active",
        "total_spent": 120.0,
        "cart_value": None,
        "cart_product_ids": None,
        "segment_keys": {},
        "named_recommendations": [],
    }
    row.update(overrides)
    return row


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_customer_data_is_never_template_code():
    engine = TemplateEngine(REPO_TEMPLATES)
    context = template_context(_row(first_name="{{ 7*7 }}<script>x</script>", city="{% raw %}"), CONFIG)
    html = engine.render("welcome.html", context).text
    assert "<p>Hello {{ 7*7 }}&lt;script&gt;x&lt;/script&gt;,</p>" in html
    assert "49" not in html
    assert "from {% raw %}." in html
    text = engine.render("welcome.txt", context).text
    assert _lines(text)[0] == "Hello {{ 7*7 }}<script>x</script>,"  # text is not HTML-escaped


def test_segment_blocks_recommendations_and_fallbacks():
    engine = TemplateEngine(REPO_TEMPLATES)
    row = _row(
        first_name=None,
        segment_keys={"interested_in_product": ["P1"], "vip": []},
        named_recommendations=[
            {"rank": 0, "product_id": "P7", "name": "Blue <Kettle>", "confidence": 0.95},
            {"rank": 1, "product_id": "P8", "name": "Toaster", "confidence": 0.5},
            {"rank": 2, "product_id": "P9", "name": None, "confidence": 0.8},
        ],
    )
    context = template_context(row, CONFIG, campaign_id="welcome")
    assert context["customer_segment"] == "Interested in Product X"
    assert context["variant"] == "B"  # c1 in campaign welcome (see test_variants)
    assert [p["product_id"] for p in context["recommended_products"]] == ["P7", "P9"]

    rendered = engine.render("welcome.txt", context)
    assert _lines(rendered.text) == [
        "Hello there,",
        "Here is 10% off your next order: use code WELCOME10.",
        "Still thinking about it? It is waiting for you.",
        "As a VIP you get free delivery on every order.",
        "Picked for you: Blue <Kettle>, P9",
    ]
    assert rendered.fallbacks == {"first_name"}
    assert rendered.missing == set()

    html = engine.render("welcome.html", context)
    assert "<li>Blue &lt;Kettle&gt;</li>" in html.text
    assert "<li>P9</li>" in html.text  # no name: the product id is the fallback
    assert "Toaster" not in html.text  # confidence 0.5 < 0.8
    assert html.fallbacks == {"first_name", "product.name"}

    # not in any segment, no recommendations: neither block, the default content instead
    plain = engine.render("welcome.html", template_context(_row(customer_id="c4"), CONFIG, campaign_id="welcome"))
    assert "VIP" not in plain.text and "Still thinking" not in plain.text
    assert "<p>Thanks for being with us.</p>" in plain.text  # c4 is variant A
    assert "<p>Browse our new arrivals.</p>" in plain.text


def test_missing_fields_are_reported_and_strict_mode_fails(tmp_path):
    (tmp_path / "t.txt").write_text("Dear {{ first_name }} {{ last_name }},\n", encoding="utf-8")
    context = {"first_name": "Ada"}
    rendered = TemplateEngine(tmp_path).render("t.txt", context)
    assert rendered.text == "Dear Ada ,\n"
    assert rendered.missing == {"last_name"}
    with pytest.raises(UndefinedError, match="'last_name' is undefined"):
        TemplateEngine(tmp_path, strict=True).render("t.txt", context)


def test_variants_are_deterministic_with_holdout():
    campaign = Campaign(variants={"A": 1, "B": 1}, holdout_percent=10)
    # points from sha256("welcome:<id>")[:8] / 16**8 * 100, worked out with sha256sum:
    # c1 -> 980ec8dc = 59.40 -> (59.40-10)/90 = 0.55 -> B; c2 -> 10842974 = 6.45 -> holdout;
    # c4 -> 2ce60433 = 17.54 -> 0.08 -> A; c5 -> fb5439af = 98.18 -> B
    assert [assign_variant(c, "welcome", campaign) for c in ("c1", "c2", "c4", "c5")] == ["B", "holdout", "A", "B"]
    # another campaign shuffles people independently; the same pair never changes
    assert assign_variant("c1", "welcome", campaign) == "B"
    counts = {"A": 0, "B": 0, "holdout": 0}
    for n in range(2000):
        counts[assign_variant(f"cust{n}", "spring", campaign)] += 1
    assert 140 <= counts["holdout"] <= 260  # 10% of 2000 = 200
    assert 780 <= counts["A"] <= 1020 and 780 <= counts["B"] <= 1020


def test_validation_reports_line_numbers(tmp_path):
    (tmp_path / "blocks").mkdir()
    (tmp_path / "broken.html").write_text("<p>\nHello\n{% if first_name %}\n<p>{{ first_name }}\n", encoding="utf-8")
    (tmp_path / "unsafe.txt").write_text("Hi {{ first_name }}\n{{ first_name.__class__.__mro__ }}\n", encoding="utf-8")
    (tmp_path / "fields.txt").write_text(
        "Hi {{ first_name | fallback('friend') }}\n{{ loyalty_tier }}\n{% include 'blocks/bad.txt' %}\n",
        encoding="utf-8",
    )
    (tmp_path / "blocks" / "bad.txt").write_text("ok\n{{ 1 + }}\n", encoding="utf-8")
    (tmp_path / "good.txt").write_text(
        "Hi {{ first_name | fallback('friend') }}\nBye {{ last_name }}\n", encoding="utf-8"
    )
    contexts = [{"customer_id": "c1", "first_name": "Ada"}, {"customer_id": "c2"}]

    report = validate_templates(TemplateEngine(tmp_path), contexts)
    assert report.templates == ["broken.html", "fields.txt", "good.txt", "unsafe.txt"]
    assert not report.ok
    assert [str(i) for i in report.issues] == [
        "blocks/bad.txt:2: syntax_error: unexpected 'end of print statement'",
        "broken.html:4: syntax_error: Unexpected end of template. Jinja was looking for the following tags: "
        "'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'.",
        # the include fails for everybody, so the template's own fields are not reached
        "fields.txt: render_error: blocks/bad.txt:2: unexpected 'end of print statement' (2 customers)",
        "good.txt:2: missing_field: last_name (2 customers)",
        "good.txt:1: fallback_used: first_name (1 customers)",
        # the sandbox refuses dunder attributes, whether the value exists (c1) or not (c2)
        "unsafe.txt:2: render_error: SecurityError: access to attribute '__class__' of 'TrackingUndefined' "
        "object is unsafe. (1 customers)",
        "unsafe.txt:2: render_error: SecurityError: access to attribute '__class__' of 'str' object is unsafe. "
        "(1 customers)",
    ]


def test_repository_templates_validate_and_point_into_blocks():
    contexts = [
        template_context(_row(segment_keys={"vip": []}), CONFIG, campaign_id="welcome"),
        template_context(
            _row(
                customer_id="c2",
                first_name=None,
                named_recommendations=[{"rank": 0, "product_id": "P1", "name": None, "confidence": 0.9}],
            ),
            CONFIG,
            campaign_id="welcome",
        ),
    ]
    report = validate_templates(TemplateEngine(REPO_TEMPLATES), contexts)
    assert report.ok
    assert [str(i) for i in report.issues] == [
        "welcome.html: fallback_used: fallback_note (in blocks/recommendations.html:9) (1 customers)",
        "welcome.html:5: fallback_used: first_name (1 customers)",
        "welcome.html: fallback_used: product.name (in blocks/recommendations.html:5) (1 customers)",
        # the SMS text: its first two lines are a comment
        "welcome.sms.txt:3: fallback_used: first_name (1 customers)",
        "welcome.txt:1: fallback_used: first_name (1 customers)",
    ]
