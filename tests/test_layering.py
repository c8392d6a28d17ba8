"""The dependency direction of DESIGN.md: serving → engine → models, processing → media
(speech sits beside perception: it uses media and is used by serving; cluster deploys serving
and engine on Ray Serve).

Nothing imports from a layer above it. Checked on the source text of every module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import omniloom

ROOT = Path(omniloom.__file__).parent
LAYER = {
    "kernels": 0,
    "media": 0,
    "processing": 1,
    "models": 2,
    "perception": 3,
    "speech": 3,
    "engine": 3,
    "serving": 4,
    "eval": 5,
    "training": 5,
    "cluster": 5,
}
TOP_LEVEL_ALLOWED_EVERYWHERE = {"config", "errors"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("omniloom."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("omniloom."))
    return names


def test_no_upward_imports():
    violations = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).parts
        if len(rel) < 2 or rel[0] not in LAYER:
            continue
        for target in _imports(path) - TOP_LEVEL_ALLOWED_EVERYWHERE:
            if target in LAYER and LAYER[target] > LAYER[rel[0]]:
                violations.append(f"{'/'.join(rel)} imports omniloom.{target}")
    assert not violations, violations


def test_every_module_starts_with_a_docstring():
    missing = [
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert not missing, missing
