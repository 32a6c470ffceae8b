"""Security corpus for templates: the render budget (time, output size, loop iterations, number
size) and the immutable sandbox. Each case asserts the refusal message, that it came back fast
(instead of running until killed), and that the caller's context is unchanged. Zero false
refusals: every shipped template renders and validates. Pure Python, no Spark."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
from jinja2.sandbox import SecurityError

from lakecdp.personalization.config import PersonalizationConfig, RenderBudgetConfig
from lakecdp.personalization.customers import template_context
from lakecdp.personalization.engine import TemplateEngine
from lakecdp.personalization.preview import validate_templates
from lakecdp.personalization.sandbox import BudgetedSandbox, RenderBudget, RenderBudgetExceeded

REPO_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"

LOOPS = "more than 100,000 loop iterations (max_loop_iterations)"
CASES = [
    # (template, exception, message part)
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", RenderBudgetExceeded, LOOPS),
    (
        "{% for i in range(1000) %}{% for j in range(1000) %}{{ i }}{% endfor %}{% endfor %}",
        RenderBudgetExceeded,
        LOOPS,
    ),
    ("{{ 9**(9**9) }}", RenderBudgetExceeded, "9 ** 387420489 has about 1228093894 bits (limit 4096)"),
    ("{{ 2**5000 }}", RenderBudgetExceeded, "2 ** 5000 has about 5000 bits (limit 4096)"),
    (
        "{{ 'x'*10**9 }}",
        RenderBudgetExceeded,
        "a repeated str would be 1,000,000,000 long (max_output_chars 1,000,000)",
    ),
    ("{{ 10**9*'x' }}", RenderBudgetExceeded, "a repeated str would be 1,000,000,000 long"),
    ("{{ ['x']*10**8 }}", RenderBudgetExceeded, "a repeated list would be 100,000,000 long"),
    ("{{ range(10**9)|list }}", OverflowError, "Range too big"),
    ("{% for i in range(10**9) %}{% endfor %}", OverflowError, "Range too big"),
    ("{{ 'x'|center(1000000000) }}", RenderBudgetExceeded, "filter center of size 1000000000"),
    ("{{ 'x'.ljust(1000000000) }}", RenderBudgetExceeded, "str.ljust of size 1000000000"),
    ("{{ '%1000000000s'|format('x') }}", RenderBudgetExceeded, "a %-format width 1000000000"),
    ("{{ '%1000000000s' % 'x' }}", RenderBudgetExceeded, "a %-format width 1000000000"),
    ("{{ '{:>1000000000}'.format('x') }}", RenderBudgetExceeded, "a format width 1000000000"),
    ("{{ lipsum(1000000) }}", RenderBudgetExceeded, "lipsum of 1000000 paragraphs (at most 100)"),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        RenderBudgetExceeded,
        "a joined string (~) is 1,048,576 long (max_output_chars 1,000,000)",
    ),
    ("{{ ('x'*1000000).replace('', 'yy') }}", RenderBudgetExceeded, "a replace would be 3,000,002 long"),
    ("{{ (['x'*900000]*1000)|join(',') }}", RenderBudgetExceeded, "a join would be"),
    (
        "{% for i in range(100000) %}{{ 'x'*100 }}{% endfor %}",
        RenderBudgetExceeded,
        "output longer than 1,000,000 characters (max_output_chars)",
    ),
    # the sandbox itself (kept from before): no dunders, no mutation of what the template is given
    ("{{ first_name.__class__.__mro__ }}", SecurityError, "access to attribute '__class__' of 'str' object is unsafe"),
    ("{% set _ = segments.append('vip') %}", SecurityError, "access to attribute 'append' of 'list' object is unsafe"),
    ("{{ segments.pop() }}", SecurityError, "access to attribute 'pop' of 'list' object is unsafe"),
    (
        "{{ segment_keys.update({'vip': []}) }}",
        SecurityError,
        "access to attribute 'update' of 'dict' object is unsafe",
    ),
    (
        "{{ segment_keys.setdefault('vip', []) }}",
        SecurityError,
        "access to attribute 'setdefault' of 'dict' object is unsafe",
    ),
]


def _context() -> dict:
    return {"first_name": "Ada", "segments": ["churn_risk"], "segment_keys": {"churn_risk": ["P1"]}}


@pytest.mark.parametrize(("source", "exception", "message"), CASES)
def test_template_payloads_are_refused_fast_and_change_nothing(tmp_path, source, exception, message):
    (tmp_path / "attack.txt").write_text(source, encoding="utf-8")
    engine = TemplateEngine(tmp_path)
    context = _context()
    before = copy.deepcopy(context)
    started = time.monotonic()
    with pytest.raises(exception) as error:
        engine.render("attack.txt", context)
    assert time.monotonic() - started < 3  # 2 s budget plus slack; most refusals come before any work
    assert message in str(error.value)
    assert context == before  # the caller's context is exactly as it was


def test_the_time_budget_stops_a_slow_render():
    # every operation is cheap, but there are many: the clock stops it, not a count
    env = BudgetedSandbox(budget=RenderBudget(max_seconds=0.3, max_loop_iterations=10**9))
    source = "{% for i in range(100000) %}{% for j in range(100000) %}{{ (i * j) % 7 }}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(RenderBudgetExceeded, match=r"render budget: took longer than 0.3 s \(max_seconds\)"):
        env.render_string(source, {})
    assert time.monotonic() - started < 1.5


def test_a_budget_from_config_applies(tmp_path):
    (tmp_path / "t.txt").write_text("{% for i in range(50) %}.{% endfor %}", encoding="utf-8")
    small = RenderBudgetConfig(max_loop_iterations=10).budget()
    with pytest.raises(RenderBudgetExceeded, match="more than 10 loop iterations"):
        TemplateEngine(tmp_path, budget=small).render("t.txt", {})
    assert TemplateEngine(tmp_path).render("t.txt", {}).text == "." * 50


def test_validation_reports_a_budget_breach_with_its_line(tmp_path):
    (tmp_path / "big.txt").write_text("Hello {{ first_name }}\n{{ 'x' * 10**9 }}\n", encoding="utf-8")
    report = validate_templates(TemplateEngine(tmp_path), [{"customer_id": "c1", "first_name": "Ada"}])
    assert not report.ok
    assert [str(i) for i in report.issues] == [
        "big.txt:2: render_error: RenderBudgetExceeded: render budget: a repeated str would be 1,000,000,000 long "
        "(max_output_chars 1,000,000) (1 customers)",
    ]


def test_every_shipped_template_renders_within_budget_with_no_refusal():
    config = PersonalizationConfig(
        segment_names={"interested_in_product": "Interested in Product X", "vip": "VIP"},
        segment_priority=["interested_in_product", "vip"],
    )
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
        "segment_keys": {"interested_in_product": ["P1"], "vip": []},
        "named_recommendations": [{"rank": 0, "product_id": "P7", "name": "Kettle", "confidence": 0.9}],
    }
    contexts = [
        template_context(row, config),
        template_context({**row, "customer_id": "c2", "segment_keys": {}, "named_recommendations": []}, config),
    ]
    engine = TemplateEngine(REPO_TEMPLATES)
    report = validate_templates(engine, contexts)
    assert report.templates == ["welcome.html", "welcome.sms.txt", "welcome.txt"]
    assert report.ok
    assert [i for i in report.issues if i.is_error] == []
    text = engine.render("welcome.txt", contexts[0]).text
    assert "As a VIP you get free delivery on every order." in text
    assert "Picked for you: Kettle" in text


def test_shipped_payload_templates_render(monkeypatch):
    # the demo destination's payload template for a full batch, as lakecdp activate renders it
    from lakecdp.activation.config import load_destinations
    from lakecdp.activation.webhook import WebhookClient

    hook = load_destinations(Path(__file__).resolve().parents[1] / "conf")["demo_webhook"]
    monkeypatch.setenv("LAKECDP_DEMO_RECEIVER_URL", "http://127.0.0.1:9/")  # resolved, never connected to
    client = WebhookClient("demo_webhook", hook, run_id="r1")
    items = [
        {"idempotency_key": f"k{n}", "change_id": f"ch{n}", "customer_id": f"c{n}"} for n in range(hook.batch_size)
    ]
    body = client.render(items)
    assert body.startswith(b'{"source": "lakecdp", "destination": "demo_webhook", "run_id": "r1",')
    assert body.count(b'"idempotency_key"') == hook.batch_size
