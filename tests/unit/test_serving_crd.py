"""The ModelVersion and ModelDeployment CRDs against the parsers, the decision's status and the examples.

The API server prunes any status field its schema does not declare, so every field the serving
decision writes is checked against the schema here, before a cluster silently drops it.
"""

from __future__ import annotations

import pathlib
from datetime import timedelta

import pytest
import yaml

from serving import NOW, decide, health, md, observe, serving, version
from torchyard.api import modeldeployment as md_api
from torchyard.api import modelversion as mv_api
from torchyard.api.errors import SpecError

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "crds" / name).read_text())


MD_CRD, MV_CRD = load("modeldeployment.yaml"), load("modelversion.yaml")


def schema(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def at(node: dict, path: str) -> dict | None:
    for key in path.split("."):
        node = (node.get("properties") or {}).get(key)
        if node is None:
            return None
    return node


def undeclared(node: dict, value, path: str) -> list[str]:
    """Paths in `value` that the schema `node` does not declare (and would prune)."""
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        props, extra = node.get("properties") or {}, node.get("additionalProperties")
        out = []
        for key, sub in value.items():
            child = props.get(key) or (extra if isinstance(extra, dict) else None)
            out += [f"{path}.{key}"] if child is None else undeclared(child, sub, f"{path}.{key}")
        return out
    if isinstance(value, list):
        return [p for item in value for p in undeclared(node.get("items") or {}, item, f"{path}[]")]
    return []


@pytest.mark.parametrize("crd, api, short", [(MD_CRD, md_api, "md"), (MV_CRD, mv_api, "mv")])
def test_names_and_status_subresource(crd, api, short):
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{api.PLURAL}.{api.GROUP}"
    assert (names["kind"], names["plural"], names["shortNames"]) == (api.KIND, api.PLURAL, [short])
    version = crd["spec"]["versions"][0]
    assert version["name"] == api.VERSION and version["subresources"] == {"status": {}}


def test_model_version_columns_show_the_main_metric_and_its_spec_is_immutable():
    columns = {c["name"]: c["jsonPath"] for c in MV_CRD["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Metric"] == ".spec.mainMetric.name" and columns["Value"] == ".spec.mainMetric.value"
    assert {"Model", "Version", "Age"} <= set(columns)
    rules = at(schema(MV_CRD), "spec")["x-kubernetes-validations"]
    assert any(r["rule"] == "self == oldSelf" for r in rules)


@pytest.mark.parametrize("path, value", [
    ("spec.policy", md_api.LATEST_PASSING), ("spec.replicas", 1), ("spec.standby", 1),
    ("spec.retiredVersions", md_api.SCALE_TO_ZERO), ("spec.failover.minReadyReplicas", 1),
    ("spec.failover.gracePeriodSeconds", 1), ("spec.failover.crashLoopRestarts", 3), ("spec.server.port", 8080),
    ("spec.gate.maxRegression", 0), ("spec.server.batching.maxBatchSize", 1),
    ("spec.server.batching.maxWaitMilliseconds", 0),
])
def test_schema_defaults_are_the_parsers(path, value):
    assert at(schema(MD_CRD), path)["default"] == value
    parsed = md().spec
    attribute = {"spec.policy": parsed.policy, "spec.replicas": parsed.replicas, "spec.standby": parsed.standby,
                 "spec.retiredVersions": parsed.retired_versions,
                 "spec.failover.minReadyReplicas": parsed.failover.min_ready_replicas,
                 "spec.failover.gracePeriodSeconds": parsed.failover.grace_period_seconds,
                 "spec.failover.crashLoopRestarts": parsed.failover.crash_loop_restarts,
                 "spec.server.port": parsed.server.port, "spec.gate.maxRegression": parsed.gate.max_regression,
                 "spec.server.batching.maxBatchSize": parsed.server.batching.max_batch_size,
                 "spec.server.batching.maxWaitMilliseconds": parsed.server.batching.max_wait_milliseconds}[path]
    assert attribute == value


def test_batching_bounds_are_the_parsers():
    batching = at(schema(MD_CRD), "spec.server.batching")["properties"]
    assert batching["maxBatchSize"]["maximum"] == md_api.MAX_BATCH_SIZE
    assert batching["maxWaitMilliseconds"]["maximum"] == md_api.MAX_BATCH_WAIT_MS


def test_enums_are_the_parsers():
    assert set(at(schema(MD_CRD), "spec.policy")["enum"]) == set(md_api.POLICIES)
    assert set(at(schema(MD_CRD), "spec.retiredVersions")["enum"]) == set(md_api.RETIRE_POLICIES)
    assert set(at(schema(MV_CRD), "status.phase")["enum"]) == set(mv_api.PHASES)


@pytest.mark.parametrize("crd", [MD_CRD, MV_CRD])
def test_every_field_is_described(crd):
    missing = []

    def walk(node, path):
        for key, sub in (node.get("properties") or {}).items():
            if key != "metadata" and not sub.get("description"):
                missing.append(f"{path}.{key}")
            walk(sub, f"{path}.{key}")
        if "items" in node:
            walk(node["items"], path + "[]")
    walk(schema(crd), "")
    assert missing == []


@pytest.mark.parametrize("spec, field", [
    ({"policy": "Pinned"}, "spec.activeVersion"),
    ({"replicas": 1, "failover": {"minReadyReplicas": 2}}, "spec.failover.minReadyReplicas"),
    ({"modelName": "Digits.v2"}, "spec.modelName"),
    ({"verification": {"expectedOutput": {"predictions": [1]}}}, "spec.verification.expectedOutput"),
    ({"gate": {"maxRegression": -0.1}}, "spec.gate.maxRegression"),
    ({"server": {"batching": {"maxBatchSize": 0}}}, "spec.server.batching.maxBatchSize"),
    ({"server": {"batching": {"maxBatchSize": 4096}}}, "spec.server.batching.maxBatchSize"),
    ({"server": {"batching": {"maxWaitMilliseconds": -1}}}, "spec.server.batching.maxWaitMilliseconds"),
    ({"server": {"batching": {"maxWaitMilliseconds": 5000}}}, "spec.server.batching.maxWaitMilliseconds"),
])
def test_the_parser_names_the_bad_field(spec, field):
    with pytest.raises(SpecError) as err:
        md(**spec)
    assert err.value.field == field


THREE = [version(1), version(2), version(3)]


def statuses():
    """Statuses of several situations: first rollout, gate rejection, failover, a pending rollback."""
    yield decide(md(), {}, observe(THREE)).status
    yield decide(md(), serving(2), observe([version(2), version(3, 0.1)], [health(2)], selected=2)).status
    failed = decide(md(standby=2), serving(3, unhealthySince="2026-01-01T11:59:00.000000Z"),
                    observe(THREE, [health(1), health(2), health(3, 0)], selected=3)).status
    yield failed
    yield decide(md(), failed, observe(THREE, [health(2), health(3)], selected=2, now=NOW + timedelta(seconds=0.5))).status
    yield decide(md(activeVersion=1), serving(3), observe(THREE, [health(3)], selected=3)).status


@pytest.mark.parametrize("status", list(statuses()))
def test_every_status_field_the_decision_writes_is_declared(status):
    assert undeclared(at(schema(MD_CRD), "status"), status, "status") == []


def test_model_version_status_fields_are_declared():
    plan = decide(md(), serving(2), observe([version(2), version(3, 0.1)], [health(2)], selected=2))
    for written in plan.version_status.values():
        assert undeclared(at(schema(MV_CRD), "status"), written, "status") == []


def serving_examples():
    for path in sorted((ROOT / "examples").glob("serving-*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == md_api.KIND:
                yield pytest.param(doc, id=path.name)


def test_there_is_a_serving_example():
    assert list(serving_examples())


@pytest.mark.parametrize("doc", list(serving_examples()))
def test_serving_examples_parse(doc):
    parsed = md_api.parse_model_deployment(doc)
    assert parsed.spec.model_name and doc["metadata"].get("namespace") is None
