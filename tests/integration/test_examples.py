"""kubectl fit, for every kind in crds/ and every file in examples/.

- Every example applies cleanly to the API server (`--dry-run=server`: defaulting, schema and CEL
  run in full, nothing is stored) and keeps every field it sets. TrainingJob documents are covered
  by test_crd_validation.py; this covers every other document (ModelDeployments, claims, ...).
- Every kind has printer columns: the server's table for `kubectl get` has the CRD's columns.
- Every field has a description where `kubectl explain` reads it: in the OpenAPI document the
  server publishes for all kinds, and in `kubectl explain` itself for ModelVersion and
  ModelDeployment (the TrainingJob's explain output has its own test).
"""

from __future__ import annotations

import json
import pathlib

import pytest
import yaml

from harness.waits import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRDS = [doc for path in sorted((ROOT / "crds").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"]
DOCUMENTS = [(path, index, doc) for path in sorted((ROOT / "examples").glob("*.yaml"))
             for index, doc in enumerate(yaml.safe_load_all(path.read_text())) if doc]
OTHER_THAN_JOBS = [(p, i, d) for p, i, d in DOCUMENTS if d["kind"] != "TrainingJob"]
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def _contains(big, small) -> bool:
    """True when every field of `small` is in `big` with the same value (defaults may be added)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(big) == len(small) and all(map(_contains, big, small))
    return big == small or str(big) == str(small)  # quantities come back as strings


def test_every_example_file_holds_documents_of_known_kinds():
    kinds = {crd["spec"]["names"]["kind"] for crd in CRDS} | {"PersistentVolumeClaim", "ConfigMap", "Secret"}
    assert DOCUMENTS, "examples/ is empty"
    assert {doc["kind"] for _, _, doc in DOCUMENTS} <= kinds
    assert all(doc["metadata"].get("namespace") is None for _, _, doc in DOCUMENTS), \
        "examples apply to whatever namespace the user picks"


@pytest.mark.parametrize("path, index, doc", OTHER_THAN_JOBS,
                         ids=[f"{p.name}#{i}-{d['kind']}" for p, i, d in OTHER_THAN_JOBS])
def test_example_document_applies_and_keeps_every_field(cluster, crds, namespace, path, index, doc):
    result = cluster.kubectl("apply", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-",
                             input=yaml.safe_dump(doc), check=False)
    assert result.returncode == 0, f"{path.name} document {index}: {result.stderr}"
    returned = json.loads(result.stdout)
    assert _contains(returned.get("spec"), doc.get("spec")), f"the server pruned or changed a field of {path.name}"


@pytest.mark.parametrize("crd", CRDS, ids=[c["spec"]["names"]["kind"] for c in CRDS])
def test_kubectl_get_shows_the_printer_columns(cluster, crds, namespace, crd):
    version = crd["spec"]["versions"][0]
    declared = [column["name"] for column in version.get("additionalPrinterColumns", [])]
    assert len(declared) >= 3, "a kind needs columns a user can scan in `kubectl get`"
    path = f"/apis/{crd['spec']['group']}/{version['name']}/namespaces/{namespace}/{crd['spec']['names']['plural']}"
    response = cluster.api.call_api("GET", cluster.api.configuration.host + path, header_params={"Accept": TABLE})
    response.read()
    assert response.status == 200
    table = json.loads(response.data)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name"] + declared
    assert all(c["description"] for c in table["columnDefinitions"][1:])


def published_schemas(cluster) -> dict:
    """The OpenAPI v3 schemas the server publishes for torchyard.dev (what kubectl explain reads)."""
    wanted = {f"dev.torchyard.{crd['spec']['versions'][0]['name']}.{crd['spec']['names']['kind']}" for crd in CRDS}

    def fetch():
        raw = cluster.kubectl("get", "--raw", "/openapi/v3/apis/torchyard.dev/v1alpha1", check=False)
        schemas = json.loads(raw.stdout)["components"]["schemas"] if raw.returncode == 0 else {}
        return schemas if wanted <= set(schemas) else None

    schemas = wait_for(fetch, "the published OpenAPI document", timeout=60, interval=2)
    return {name: schemas[name] for name in wanted}


def undescribed(node: dict, path: str) -> list[str]:
    """Paths of the fields under `node` that have no description."""
    missing = []
    children = dict(node.get("properties", {}))
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            children[f"[{key}]"] = node[key]
    for name, child in children.items():
        if "$ref" in child or "allOf" in child:  # Kubernetes' own types (metadata): described upstream
            continue
        if not name.startswith("[") and not child.get("description", "").strip():
            missing.append(f"{path}.{name}")
        missing += undescribed(child, f"{path}.{name}")
    return missing


def test_every_field_of_every_kind_is_described_in_the_published_schema(cluster, crds):
    for name, schema in published_schemas(cluster).items():
        assert undescribed(schema, name.rsplit(".", 1)[1]) == []


def object_paths(node: dict, path: str) -> list[tuple[str, dict]]:
    """Every field path that holds an object with fields, as `kubectl explain` addresses them."""
    found = [(path, node)] if node.get("properties") else []
    for name, child in node.get("properties", {}).items():
        child = child.get("items", child) if child.get("type") == "array" else child
        found += object_paths(child, f"{path}.{name}")
    return found


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("kind", ["ModelVersion", "ModelDeployment"])
def test_kubectl_explain_describes_every_field(cluster, crds, kind):
    crd = next(c for c in CRDS if c["spec"]["names"]["kind"] == kind)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    published_schemas(cluster)  # explain works once the document is published
    for path, node in object_paths(schema, kind.lower()):
        if path == kind.lower():
            continue  # the top level lists apiVersion, kind and metadata too
        output = _words(cluster.kubectl("explain", path).stdout)
        for field, child in node["properties"].items():
            assert _words(child["description"])[:50] in output, f"kubectl explain {path}: {field}"
