"""The package graph has no cycle and imports only go down: core <- retrieval <- (training, serving) ...
<- cluster. Every import counts, including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "retrieval", "training", "serving", "evaluation", "cluster")
ALLOWED = {
    "core": set(),
    "retrieval": {"core"},
    "training": {"core", "retrieval"},
    "serving": {"core", "retrieval"},
    "evaluation": {"core"},
    "cluster": {"core", "retrieval", "training", "serving", "evaluation"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """{other package: files of `package` that import it}."""
    found: dict[str, set[str]] = {}
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_imports_only_go_down() -> None:
    wrong = {
        (pkg, dep): sorted(files)
        for pkg in PACKAGES
        for dep, files in imported_packages(pkg).items()
        if dep not in ALLOWED[pkg]
    }
    assert not wrong, wrong


def test_allowed_graph_has_no_cycle() -> None:
    seen: list[str] = []
    remaining = {k: set(v) for k, v in ALLOWED.items()}
    while remaining:
        leaves = [p for p, deps in remaining.items() if deps <= set(seen)]
        assert leaves, f"cycle among {sorted(remaining)}"
        seen += leaves
        for p in leaves:
            del remaining[p]
    assert seen[0] == "core"
