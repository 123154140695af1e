"""What the trainer image may import, and an import check of exactly what its Dockerfile copies.

The trainer image installs torchyard_trainer and the shared torchyard_spec package, nothing of the
operator. When the trainer once imported the operator's API module, the image stopped building
and no test noticed; these tests notice.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAINER = ROOT / "trainer-image" / "torchyard_trainer"
SHARED = ROOT / "operator" / "torchyard_spec"
DOCKERFILE = ROOT / "trainer-image" / "Dockerfile"
IMPORT_NAMES = {"scikit-learn": "sklearn"}  # distribution name -> import name, where they differ


def installed_by_the_trainer_image() -> set[str]:
    """Import names of what trainer-image/Dockerfile pip-installs: the trainer extra and prometheus-client."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["optional-dependencies"]["trainer"] + [
        d for d in project["dependencies"] if d.startswith("prometheus-client")]
    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip() for r in requirements}
    return {IMPORT_NAMES.get(n, n.replace("-", "_")) for n in names}


def top_level_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in the file, including those inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def foreign(package: Path, allowed: set[str]) -> dict[str, list[str]]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        bad = sorted(m for m in top_level_imports(path) if m not in sys.stdlib_module_names and m not in allowed)
        if bad:
            out[path.relative_to(ROOT).as_posix()] = bad
    return out


def test_the_trainer_imports_only_what_its_image_installs_and_the_shared_package():
    installed = installed_by_the_trainer_image()
    assert {"torch", "numpy", "sklearn", "prometheus_client"} <= installed
    assert foreign(TRAINER, installed | {"torchyard_trainer", "torchyard_spec"}) == {}


def test_the_trainer_never_imports_the_operator():
    users = [p.name for p in TRAINER.rglob("*.py") if "torchyard" in top_level_imports(p)]
    assert users == [], "the operator package is not in the trainer image"


def test_the_shared_package_is_standard_library_only():
    assert foreign(SHARED, {"torchyard_spec"}) == {}


def copied_paths(dockerfile: Path) -> list[tuple[str, str]]:
    """(source, destination) of every COPY from the build context (not from another stage)."""
    pairs = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words[:1] != ["COPY"] or any(w.startswith("--from") for w in words):
            continue
        *sources, dest = [w for w in words[1:] if not w.startswith("--")]
        pairs.extend((src, dest) for src in sources)
    return pairs


def copy_build_context(pairs: list[tuple[str, str]], into: Path) -> None:
    for src, dest in pairs:
        source, target = ROOT / src, into / dest
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target = target / source.name if dest.endswith("/") else target
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)


def test_the_trainer_dockerfile_copies_the_shared_package_whole():
    assert ("operator/torchyard_spec/", "operator/torchyard_spec/") in copied_paths(DOCKERFILE)
    assert ("operator/torchyard_spec/", "operator/torchyard_spec/") in copied_paths(ROOT / "Dockerfile")


def test_the_copied_context_holds_the_packages_pip_installs(tmp_path):
    from setuptools import find_packages

    copy_build_context(copied_paths(DOCKERFILE), tmp_path)
    config = tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    found = {p for where in config["where"] if (tmp_path / where).is_dir()
             for p in find_packages(tmp_path / where, include=config["include"])}
    assert {"torchyard_spec", "torchyard_trainer"} <= found
    assert "torchyard" not in found


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_the_trainer_imports_from_only_what_its_dockerfile_copies(tmp_path):
    copy_build_context(copied_paths(DOCKERFILE), tmp_path)
    # -S: no site hooks, so an editable install of the repository cannot supply a missing module;
    # the interpreter's site-packages (torch and the rest) are added as plain directories.
    path = [str(tmp_path / "operator"), str(tmp_path / "trainer-image"), *site.getsitepackages()]
    code = ("import sys; sys.path[1:1] = sys.argv[1].split(os.pathsep)\n"
            "import torchyard_trainer.runner, torchyard_trainer.serve, torchyard_trainer.__main__\n"
            "assert 'torchyard' not in sys.modules, 'the operator package was imported'")
    result = subprocess.run([sys.executable, "-S", "-c", "import os\n" + code, os.pathsep.join(path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
