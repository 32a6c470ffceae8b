"""The whiteboard in docs/DESIGN.md ("Rooms and arrows") against the import graph of lib/lakecdp.

Every import of a lakecdp module is read from the source (imports inside functions too), without
importing anything: the house imports only the house, a room the house and the rooms its arrow
names, a door anything; no unit imports another's ``_private`` names; every unit of lib/lakecdp
is on the whiteboard.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib" / "lakecdp"


def _whiteboard(text: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(layer -> units, room -> rooms and doors its arrow names), from the block in DESIGN.md."""
    match = re.search(r"<!-- whiteboard: start -->\n```\n(.*?)```\n<!-- whiteboard: end -->", text, re.S)
    assert match, "docs/DESIGN.md has no whiteboard block"
    layers: dict[str, set[str]] = {}
    arrows: dict[str, set[str]] = {}
    for line in match.group(1).splitlines():
        if not line.strip():
            continue
        if "->" in line:
            room, _, targets = line.partition("->")
            assert room.strip() not in arrows, f"room {room.strip()} drawn twice"
            arrows[room.strip()] = set(targets.split())
        else:
            layer, _, units = line.partition(":")
            layers[layer.strip()] = set(units.split())
    return layers, arrows


@pytest.fixture(scope="module")
def whiteboard():
    return _whiteboard((ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    """``lakecdp.segments.job`` -> ``segments``; ``lakecdp.tables`` -> ``tables``; ``lakecdp`` -> ``lakecdp``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, imported name or None) of every absolute lakecdp import in the file."""
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "lakecdp":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                # "from lakecdp import catalog" / "from lakecdp.activation import ledger": a module
                is_module = (LIB.parent / candidate.replace(".", "/")).with_suffix(".py").is_file() or (
                    LIB.parent / candidate.replace(".", "/") / "__init__.py"
                ).is_file()
                found.append((node.lineno, candidate, None) if is_module else (node.lineno, node.module, alias.name))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "lakecdp")
        elif isinstance(node, ast.ImportFrom) and node.level:
            pytest.fail(f"{path}:{node.lineno}: a relative import (the whiteboard test reads absolute ones)")
    return found


def _graph() -> dict[str, list[tuple[str, int, str, str | None]]]:
    """importing module -> [(its file, line, imported module, imported name)]."""
    graph: dict[str, list[tuple[str, int, str, str | None]]] = defaultdict(list)
    for path in sorted(LIB.rglob("*.py")):
        for line, module, name in _imports(path):
            graph[_module_name(path)].append((str(path.relative_to(ROOT)), line, module, name))
    return graph


def _is_door(module: str, doors: set[str]) -> bool:
    # a room's command line (<room>/cli.py) is a door inside its room
    return _unit(module) in doors or module.endswith(".cli")


def test_every_unit_of_the_package_is_on_the_whiteboard(whiteboard):
    layers, arrows = whiteboard
    assert set(layers) == {"house", "rooms", "doors"}
    placed = [unit for units in layers.values() for unit in units]
    assert len(placed) == len(set(placed)), "a unit is on two layers"
    units = {_unit(_module_name(path)) for path in LIB.rglob("*.py")} - {"lakecdp"}
    assert units == set(placed), (
        f"not on the whiteboard: {sorted(units - set(placed))}; drawn but absent: {sorted(set(placed) - units)}"
    )
    assert set(arrows) == layers["rooms"], "every room has its arrow line (empty when it imports only the house)"
    for room, targets in arrows.items():
        assert targets <= layers["rooms"] | layers["doors"], (room, targets)


def test_the_import_graph_is_the_whiteboard(whiteboard):
    layers, arrows = whiteboard
    house, doors = layers["house"], layers["doors"]
    drawn_by_house_rule = {"lakecdp"} | house
    wrong: list[str] = []
    found: dict[str, set[str]] = {room: set() for room in arrows}
    for importer, imports in _graph().items():
        source = _unit(importer)
        if source == "lakecdp" or _is_door(importer, doors):
            continue
        for file, line, module, _ in imports:
            target = _unit(module)
            if target == source or target in drawn_by_house_rule:
                continue
            if source in house:
                wrong.append(f"{file}:{line}: the house imports {module} ({target} is not house)")
            else:
                found[source].add(target)
                if target not in arrows[source]:
                    wrong.append(f"{file}:{line}: {source} imports {module}; no arrow {source} -> {target}")
    assert not wrong, "\n".join(wrong)
    # and every arrow drawn is an import that exists (a stale arrow is as wrong as a missing one)
    stale = {room: sorted(arrows[room] - found[room]) for room in arrows if arrows[room] - found[room]}
    assert not stale, f"arrows on the whiteboard that no import makes: {stale}"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")  # __version__ is public


def test_no_unit_imports_the_private_names_of_another():
    wrong = [
        f"{file}:{line}: {importer} imports {module}.{name}"
        for importer, imports in _graph().items()
        for file, line, module, name in imports
        if name is not None and _is_private(name) and _unit(module) != _unit(importer)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_whiteboard_parser_reads_layers_and_arrows():
    # a hand-made block: the parser itself (so a broken block fails loudly, not as "no arrows")
    text = (
        "<!-- whiteboard: start -->\n```\nhouse: a b\nrooms: r s\ndoors: d\n\n"
        "r -> s d\ns ->\n```\n<!-- whiteboard: end -->\n"
    )
    assert _whiteboard(text) == (
        {"house": {"a", "b"}, "rooms": {"r", "s"}, "doors": {"d"}},
        {"r": {"s", "d"}, "s": set()},
    )
