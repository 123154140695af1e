"""The copies of the trainer's settings agree with their one source, torchyard_spec.trainer.RULES.

The CRD schema (what `kubectl apply` enforces), the chart's copy of it, the reference page and the
trainer guide each restate every setting's default, range and names; these tests compare them
with the parser's table field by field, so a change in one place that is not made in the others
fails here instead of in a pod.
"""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml

from torchyard_spec import catalog
from torchyard_spec.trainer import RULES, Rule, SECTIONS

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "trainingjob.yaml").read_text())
TRAINER = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["trainer"]
SCHEMA_TYPES = {"integer": "integer", "number": "number", "string": "string", "module": "string",
                "choice": "string", "sizes": "array"}
DOC_TYPES = {**SCHEMA_TYPES, "sizes": "list of integers"}
# Names the schema leaves free strings so that the operator, not the API server, names them in the
# job's Failed condition (see test_crd_schema.py); their names are listed in the description.
FREE_CHOICES = {"model.name", "dataset.name"}


def schema_at(path: str) -> dict | None:
    node = TRAINER
    for key in path.split("."):
        node = node.get("properties", {}).get(key)
        if node is None:
            return None
    return node


def shown(value) -> str:
    """A default as the docs and descriptions write it: 0.0 as 0, (128, 64) as [128, 64]."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def bounds(node: dict) -> tuple:
    return (node.get("minimum"), node.get("maximum"), bool(node.get("exclusiveMinimum")),
            bool(node.get("exclusiveMaximum")))


def rule_bounds(rule: Rule) -> tuple:
    return (rule.minimum, rule.maximum, rule.exclusive_minimum, rule.exclusive_maximum)


def test_the_chart_carries_the_same_crds():
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        assert (ROOT / "charts" / "torchyard" / "crds" / crd.name).read_text() == crd.read_text(), \
            f"run `make chart-crds` to copy {crd.name} into the chart"


def test_the_schema_declares_exactly_the_settings_the_parser_knows():
    declared, sections = set(), set()

    def walk(node: dict, path: str) -> None:
        for key, sub in node.get("properties", {}).items():
            child = f"{path}.{key}" if path else key
            (sections if sub.get("type") == "object" else declared).add(child)
            walk(sub, child)

    walk(TRAINER, "")
    assert declared == set(RULES)
    assert sections | {""} == set(SECTIONS)


@pytest.mark.parametrize("path", sorted(RULES))
def test_schema_type_range_and_names_match_the_parser(path):
    rule, node = RULES[path], schema_at(path)
    assert node["type"] == SCHEMA_TYPES[rule.kind]
    if rule.kind == "sizes":
        assert node.get("minItems", 0) == rule.min_items
        node = node["items"]
        assert node["type"] == "integer"
    if rule.kind in ("integer", "number", "sizes"):
        assert bounds(node) == rule_bounds(rule)
    if rule.kind == "choice" and path not in FREE_CHOICES:
        assert node["enum"] == list(rule.choices)
    if rule.kind == "choice" and path in FREE_CHOICES:
        assert "enum" not in node and [c for c in rule.choices if c not in node["description"]] == []
    if rule.kind == "module":
        assert node["pattern"] == catalog.MODULE_PATTERN


@pytest.mark.parametrize("path", sorted(p for p, r in RULES.items() if r.default not in (None, "")))
def test_schema_description_states_the_parser_default(path):
    value = shown(RULES[path].default)
    description = " ".join(schema_at(path)["description"].split())
    assert f"default {value}" in description or f"{value} (default" in description, description


def reference_rows() -> dict[str, list[str]]:
    """The spec.trainer table of docs/reference/trainingjob.md: field -> [type, default, rules, meaning]."""
    text = (ROOT / "docs" / "reference" / "trainingjob.md").read_text()
    section = text.split("\n## spec.trainer\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 5:
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def range_text(rule: Rule) -> str:
    low, high = ("<" if rule.exclusive_minimum else "<="), ("<" if rule.exclusive_maximum else "<=")
    if rule.maximum is None:
        return f"{'>' if rule.exclusive_minimum else '>='} {shown(float(rule.minimum))}"
    return f"{shown(float(rule.minimum))} {low} x {high} {shown(float(rule.maximum))}"


def reference_rule(rule: Rule) -> str:
    if rule.kind == "choice":
        return ", ".join(f"`{c}`" for c in rule.choices)
    if rule.kind == "sizes":
        return f"each >= {rule.minimum}"
    if rule.kind == "module":
        return "`package.module:function`"
    if rule.kind in ("integer", "number"):
        return range_text(rule)
    return ""


def test_the_reference_documents_every_setting_once():
    assert sorted(reference_rows()) == sorted(RULES)


@pytest.mark.parametrize("path", sorted(RULES))
def test_the_reference_row_matches_the_parser(path):
    rule = RULES[path]
    kind, default, rules, _ = reference_rows()[path]
    assert kind == DOC_TYPES[rule.kind]
    if rule.default is not None:
        assert default.strip("`") == shown(rule.default)
    assert rules.startswith(reference_rule(rule)), f"{path}: rules column should start with {reference_rule(rule)!r}"


def guide_defaults() -> dict[str, str]:
    """Defaults in the table of docs/trainer.md; a row may name several keys of one object."""
    text = (ROOT / "docs" / "trainer.md").read_text()
    section = text.split("## Configuration (`spec.trainer`)", 1)[1].split("\n#", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) != 3:
            continue
        keys = re.findall(r"`([^`]+)`", cells[0])
        parent = keys[0].rsplit(".", 1)[0] + "." if "." in keys[0] else ""
        paths = [keys[0]] + [parent + k for k in keys[1:]]
        values = re.findall(r"`([^`]+)`", cells[1]) or [""] * len(paths)
        out.update(zip(paths, values))
    return out


def test_the_trainer_guide_names_only_settings_that_exist():
    assert sorted(set(guide_defaults()) - set(RULES)) == []


@pytest.mark.parametrize("path", sorted(p for p, r in RULES.items() if r.default not in (None, "")))
def test_the_trainer_guide_states_the_parser_default(path):
    documented = guide_defaults().get(path)
    assert documented is not None, f"{path} is missing from the table in docs/trainer.md"
    value = RULES[path].default
    if isinstance(value, (int, float)):
        assert float(documented) == float(value)
    else:
        assert documented == shown(value)
