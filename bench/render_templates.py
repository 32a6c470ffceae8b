"""Templates rendered per second (sandboxed Jinja2, HTML with autoescape and includes).

Run: ``.venv/bin/python -m bench.render_templates [--renders 5000]``. No Spark.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.results import append_results, machine, stamp
from lakecdp.personalization.config import Campaign, PersonalizationConfig
from lakecdp.personalization.customers import template_context
from lakecdp.personalization.engine import TemplateEngine

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=5000)
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    machine_text, when = machine(), stamp()
    lines = ["| template | renders | renders/s |", "|---|---|---|"]
    config = PersonalizationConfig(
        campaigns={"welcome": Campaign(variants={"A": 1, "B": 1}, holdout_percent=10)}, segment_names={"vip": "VIP"}
    )
    contexts = [
        template_context(
            {
                "customer_id": f"c{n}",
                "first_name": None if n % 5 == 0 else f"Name{n}",
                "city": "London",
                "segment_keys": {"vip": []} if n % 3 == 0 else {},
                "named_recommendations": [
                    {"rank": 0, "product_id": "P1", "name": "Kettle", "confidence": 0.9},
                    {"rank": 1, "product_id": "P2", "name": "Mug", "confidence": 0.82},
                ],
            },
            config,
            campaign_id="welcome",
        )
        for n in range(500)
    ]
    engine = TemplateEngine(TEMPLATES)
    for name in ("welcome.html", "welcome.txt"):
        engine.render(name, contexts[0])  # compile once, as a long-running job would
        started = time.perf_counter()
        for n in range(args.renders):
            engine.render(name, contexts[n % len(contexts)])
        elapsed = time.perf_counter() - started
        lines.append(f"| {name} | {args.renders:,} | {args.renders / elapsed:,.0f} |")
    table = "\n".join(lines)
    print(table)  # noqa: T201
    if not args.no_record:
        append_results(
            f"## Personalisation: template rendering\n\nMeasured {when} on {machine_text}; sandboxed Jinja2, "
            "autoescape, includes, 500 customer contexts cycled, no Spark. "
            f"Command: `python -m bench.render_templates --renders {args.renders}`.\n\n{table}"
        )


if __name__ == "__main__":
    main()
