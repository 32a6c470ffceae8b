"""Feedback link tokens and their template function, without Spark."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakecdp.personalization.config import PersonalizationConfig
from lakecdp.personalization.customers import ProductList
from lakecdp.personalization.engine import TemplateEngine
from lakecdp.personalization.feedback import feedback_token, feedback_url

REPO_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def test_tokens_and_urls():
    assert feedback_token(product_id="P00042") == "not_interested.p.P00042"
    assert feedback_token(category="shoes", reason="wrong_recommendation") == "wrong_recommendation.c.shoes"
    assert feedback_url("https://shop.example.com/fb", "not_interested.p.P1") == (
        "https://shop.example.com/fb?lakecdp_feedback=not_interested.p.P1"
    )
    assert feedback_url("https://shop.example.com/fb?utm_source=email#top", "not_interested.c.home") == (
        "https://shop.example.com/fb?utm_source=email&lakecdp_feedback=not_interested.c.home#top"
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"product_id": "P1", "reason": "meh"}, "reason must be one of"),
        ({}, "exactly one of"),
        ({"product_id": "P1", "category": "shoes"}, "exactly one of"),
        ({"product_id": "P1&x=1"}, "must be 1-64 characters"),
        ({"category": "x" * 65}, "must be 1-64 characters"),
    ],
)
def test_bad_tokens_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        feedback_token(**kwargs)


def test_feedback_url_must_be_http():
    with pytest.raises(ValueError, match="feedback_url must be an http"):
        PersonalizationConfig(feedback_url="javascript:alert(1)")


def test_email_links_only_with_a_feedback_url():
    context = {
        "customer_id": "c1",
        "first_name": "Ada",
        "recommended_products": ProductList([{"product_id": "P1", "name": "Kettle"}]),
    }
    with_links = TemplateEngine(REPO_TEMPLATES, feedback_url="https://shop.example.com/feedback")
    html = with_links.render("welcome.html", context).text
    assert (
        '<li>Kettle <small><a href="https://shop.example.com/feedback?lakecdp_feedback=not_interested.p.P1">'
        "Not for me</a></small></li>"
    ) in html
    plain = TemplateEngine(REPO_TEMPLATES).render("welcome.html", context)
    assert "<li>Kettle</li>" in plain.text
    assert plain.missing == set()


def test_email_and_sms_share_the_segment_blocks():
    context = {
        "customer_id": "c1",
        "first_name": "Ada",
        "variant": "A",
        "segments": ["vip"],
        "segment_names": ["VIP"],
        "customer_segment": "Interested in Product X",
        "recommended_products": ProductList([{"product_id": "P1", "name": "Kettle"}]),
    }
    engine = TemplateEngine(REPO_TEMPLATES)
    assert engine.render("welcome.sms.txt", context).text == (
        "Hi Ada, thanks for being with us.\n"
        "Still thinking about it? It is waiting for you.\n"
        "As a VIP you get free delivery on every order.\n"
        "Picked for you: Kettle\n"
        "Reply STOP to opt out\n"
    )
    email = engine.render("welcome.txt", context).text
    assert "Still thinking about it? It is waiting for you.\nAs a VIP you get free delivery on every order.\n" in email
