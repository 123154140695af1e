"""The malformed-spec table of the integration tier, checked offline against the CRD and the parser.

tests/integration/test_bad_specs.py applies every case to a real API server with the operator
running; this checks, in seconds, that each case is where the table says: a case the API server
must refuse breaks a schema rule at its field (or a CEL rule declared there), and a case left to
the operator passes the schema and, where the parser can tell, fails it naming the field.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys

import pytest

from test_crd_schema import SCHEMA, job, validate
from torchyard.api.errors import SpecError
from torchyard.api.trainingjob import parse_training_job

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bad_specs", ROOT / "tests" / "integration" / "bad_specs.py")
bad_specs = sys.modules.setdefault("bad_specs", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bad_specs)
CASES = bad_specs.CASES


def schema_node(path: str) -> dict | None:
    """The schema of a dotted path, stepping into list items and map values as needed."""
    node = SCHEMA
    for key in path.split("."):
        while "items" in node and "properties" not in node:
            node = node["items"]
        props = node.get("properties", {})
        node = props.get(key) if key in props else node.get("additionalProperties")
        if not isinstance(node, dict):
            return None
    return node


def value_at(spec: dict, field: str):
    value = {"spec": spec}
    for key in re.split(r"\.|\[(\d+)\]", field):
        if key:
            value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def declared_rule_refuses(case) -> bool:
    """A CEL rule at the field, its parent or the root (for metadata), or a pattern the value breaks."""
    if case.field.startswith("metadata."):
        return bool(SCHEMA.get("x-kubernetes-validations"))
    path = re.sub(r"\[\d+\]", "", case.field)
    nodes = [schema_node(p) or {} for p in (path, path.rsplit(".", 1)[0])]
    if any(n.get("x-kubernetes-validations") for n in nodes):
        return True
    pattern = nodes[0].get("pattern")
    return pattern is not None and re.search(pattern, str(value_at(case.spec, case.field))) is None


@pytest.mark.parametrize("case", [c for c in CASES if c.where == bad_specs.APPLY], ids=lambda c: c.id)
def test_a_case_for_the_api_server_breaks_a_schema_rule_at_its_field(case):
    errors = validate(SCHEMA["properties"]["spec"], case.spec, "spec")
    assert any(e.startswith(case.field) for e in errors) or declared_rule_refuses(case), errors


@pytest.mark.parametrize("case", [c for c in CASES if c.where == bad_specs.OPERATOR], ids=lambda c: c.id)
def test_a_case_for_the_operator_passes_the_schema(case):
    assert validate(SCHEMA["properties"]["spec"], case.spec, "spec") == []


@pytest.mark.parametrize("case", [c for c in CASES if c.where == bad_specs.OPERATOR and c.field.startswith("spec.trainer.")
                                  and "teacher" not in c.field], ids=lambda c: c.id)
def test_the_parser_names_the_field_of_a_trainer_case(case):
    with pytest.raises(SpecError) as caught:
        parse_training_job(job(case.spec))
    assert caught.value.field == case.field
