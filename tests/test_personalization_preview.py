"""Preview on real Delta tables: contexts from profile, features, membership and products;
preview files; the pipeline's preview step."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from lakecdp.context import JobContext
from lakecdp.personalization import job
from lakecdp.personalization.config import Campaign, PersonalizationConfig
from lakecdp.personalization.engine import TemplateEngine
from lakecdp.personalization.preview import load_contexts, render_previews
from lakecdp.tables import Tables


REPO = Path(__file__).resolve().parents[1]
T = datetime(2026, 10, 1, tzinfo=timezone.utc)


def _write_tables(spark, tables: Tables) -> None:
    tables.append(
        spark.createDataFrame(
            [
                ("c1", "Ada", "Lovelace", "ada@example.com", "London", "GB"),
                ("c2", None, "Ray", "bob@example.com", None, "GB"),
            ],
            "customer_id string, first_name string, last_name string, email string, city string, country string",
        ),
        "gold.customer_profile",
    )
    tables.append(
        spark.createDataFrame(
            [
                ("c1", "active", 620.0, None, None, [("P1", 0.9), ("P2", 0.3), ("P3", 0.85)]),
                ("c2", "lapsed", 10.0, None, None, None),
            ],
            "customer_id string, lifecycle_stage string, total_spent double, cart_value double, "
            "cart_product_ids array<string>, recommendations array<struct<product_id:string,confidence:double>>",
        ),
        "gold.customer_features",
    )
    tables.append(
        spark.createDataFrame(
            [
                ("vip", "c1", "", True),
                ("interested_in_product", "c1", "P1", True),
                ("vip", "c2", "", False),
            ],
            "segment_id string, customer_id string, member_key string, is_current boolean",
        ),
        "segments.membership",
    )
    tables.append(
        spark.createDataFrame(
            [
                ("P1", "Kettle", "kitchen", 30.0),
                ("P2", "Toaster", "kitchen", 25.0),
            ],
            "product_id string, name string, category string, price double",
        ),
        "silver.products",
    )


# ~42 s in make test on a loaded box (two workers): the full suite's tier
@pytest.mark.slow
def test_contexts_previews_and_preview_step(spark, project, tmp_path):
    tables = Tables(project)
    _write_tables(spark, tables)
    config = PersonalizationConfig(
        segment_names={"interested_in_product": "Interested in Product X", "vip": "VIP"},
        segment_priority=["interested_in_product", "vip"],
        campaigns={"welcome": Campaign(variants={"A": 1, "B": 1}, holdout_percent=10)},
    )

    contexts = load_contexts(spark, tables, config, customer_ids=["c1", "c2"], campaign_id="welcome")
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
            "segment_keys": {"interested_in_product": ["P1"], "vip": []},
            "customer_segment": "Interested in Product X",
            # P2 (0.3) is under the 0.8 cut-off; P3 has no catalogue entry, so no name
            "recommended_products": [
                {"product_id": "P1", "name": "Kettle", "confidence": 0.9},
                {"product_id": "P3", "confidence": 0.85},
            ],
            "campaign": "welcome",
            "variant": "B",
            "in_holdout": False,
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
            "campaign": "welcome",
            "variant": "holdout",
            "in_holdout": True,
        },
    ]
    # by segment: only current members
    assert [c["customer_id"] for c in load_contexts(spark, tables, config, segment="vip")] == ["c1"]

    engine = TemplateEngine(REPO / "templates")
    files = render_previews(engine, "welcome.txt", contexts, output_dir=tmp_path / "previews")
    assert [(f.customer_id, f.path.name, f.variant, sorted(f.fallbacks)) for f in files] == [
        ("c1", "c1.txt", "B", []),
        ("c2", "c2.txt", "holdout", ["first_name"]),
    ]
    assert [line for line in files[0].path.read_text("utf-8").splitlines() if line] == [
        "Hello Ada,",
        "Here is 10% off your next order: use code WELCOME10.",
        "Still thinking about it? It is waiting for you.",
        "As a VIP you get free delivery on every order.",
        "Picked for you: Kettle, P3",
    ]

    # the pipeline step renders the demo template (+ its .txt twin) for the first customer
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "personalization.yaml").write_text(
        f"version: 1\ntemplates_dir: {REPO / 'templates'}\ndemo_campaign: null\n", encoding="utf-8"
    )
    ctx = JobContext.create(project.model_copy(update={"conf_dir": conf}), spark, run_id="p-1")
    # one fallback: P3 has no name in the HTML list, so its id is shown
    assert job.run(ctx) == {"rendered": 2, "missing_fields": 0, "fallbacks_used": 1}
    html = (project.warehouse / "previews" / "welcome" / "c1.html").read_text("utf-8")
    assert "<p>Hello Ada,</p>" in html and "<li>Kettle</li>" in html and "<li>P3</li>" in html
    assert "<p>Thanks for being with us.</p>" in html  # no campaign: no variant B offer
    assert (project.warehouse / "previews" / "welcome" / "c1.txt").is_file()


# ~37 s in make test on a loaded box (two workers): the full suite's tier
@pytest.mark.slow
def test_validate_templates_command_passes_on_the_shipped_templates(spark, project, tmp_path, capsys):
    """``lakecdp validate-templates`` with the shipped personalization.yaml (render budget
    included) and templates: no syntax or render error, nothing refused by the budget."""
    from lakecdp.cli import main

    _write_tables(spark, Tables(project))
    conf = tmp_path / "cli_conf"
    (conf / "environments").mkdir(parents=True)
    (conf / "environments" / "test.yaml").write_text(
        f"version: 1\nname: test\nstorage: {{warehouse: '{project.warehouse}'}}\n", encoding="utf-8"
    )
    shipped = (REPO / "conf" / "personalization.yaml").read_text("utf-8")
    (conf / "personalization.yaml").write_text(
        shipped.replace("templates_dir: templates", f"templates_dir: '{REPO / 'templates'}'"), encoding="utf-8"
    )
    assert main(["--conf", str(conf), "--env", "test", "validate-templates"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "validated 3 templates against 2 profiles"  # welcome.html, welcome.sms.txt, welcome.txt
    assert [line for line in out if line.startswith("ERROR")] == []
