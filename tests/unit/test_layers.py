"""The layering the code relies on, checked: pure layers do no I/O, one layer talks to the API,
and the operator never needs torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "torchyard"
PURE = ["api", "builders", "reconcile", "progress.py", "settings.py", "labels.py", "coalesce.py"]
IO_MODULES = {"kopf", "kubernetes", "aiohttp", "torchyard.kube", "torchyard.handlers", "torchyard.jobs",
              "torchyard.serving", "torchyard.http", "requests", "urllib.request"}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def files(*parts: str) -> list[Path]:
    out = []
    for part in parts:
        target = PACKAGE / part
        out.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return out


def hits(path: Path, banned: set[str]) -> list[str]:
    return sorted(m for m in imports(path) if any(m == b or m.startswith(b + ".") for b in banned))


@pytest.mark.parametrize("path", files(*PURE), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_layers_do_no_io(path):
    assert hits(path, IO_MODULES) == [], f"{path.name} is in a pure layer but imports I/O"


def test_only_the_kube_layer_imports_the_kubernetes_client():
    users = [p.relative_to(PACKAGE).as_posix() for p in files(".") if hits(p, {"kubernetes"})]
    assert users and all(u.startswith("kube/") for u in users), users


def test_the_operator_never_imports_torch():
    assert [p.name for p in files(".") if hits(p, {"torch", "torchyard_trainer"})] == []
