"""Recording benchmark figures in bench/RESULTS.md: the machine, the date, then the table."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    """CPUs, RAM, load average now, Python: what the numbers were measured on."""
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return (
        f"{os.cpu_count()} CPUs (nproc), {memory_gb:.0f} GB RAM, load average "
        f"{os.getloadavg()[0]:.1f} at start, Python {platform.python_version()}"
    )


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def append_results(text: str) -> None:
    """Append a section (Markdown) at the end of bench/RESULTS.md."""
    existing = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    RESULTS.write_text(existing.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n", encoding="utf-8")
