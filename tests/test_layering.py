"""The dependency direction of DESIGN.md: api, k8s, metrics -> scheduler -> solver, and the
simulator (``sim``) on top: it uses scheduler, solver and k8s; only api's CLI imports it.

``solver`` imports none of the other packages and ``scheduler`` none of api, k8s, metrics,
sim, counting imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scheduler", "solver", "api", "k8s", "metrics", "sim")
FORBIDDEN = {
    "solver": {"scheduler", "api", "k8s", "metrics", "sim"},
    "scheduler": {"api", "k8s", "metrics", "sim"},
    # The simulator drives the scheduler and the controller; only the CLI (api) uses it.
    "k8s": {"sim"},
    "metrics": {"sim"},
}
#: Libraries the pure solver must not use either (database, web, Kubernetes).
SOLVER_FORBIDDEN_LIBS = {
    "sqlalchemy",
    "sqlmodel",
    "fastapi",
    "starlette",
    "kubernetes",
    "httpx",
    "alembic",
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def violations() -> list[str]:
    out = []
    for package, banned in FORBIDDEN.items():
        extra = SOLVER_FORBIDDEN_LIBS if package == "solver" else set()
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = imported_roots(path) & (banned | extra)
            if bad:
                out.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    return out


def test_dependency_direction():
    assert violations() == []


def test_the_check_sees_lazy_imports(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from api.app import create_app\n    import k8s.x\n")
    assert imported_roots(sample) == {"api", "k8s"}


if __name__ == "__main__":
    found = violations()
    print("\n".join(found) or "layering ok")
    raise SystemExit(1 if found else 0)
