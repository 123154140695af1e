"""The TrainingJob CRD on a real API server.

It is accepted as a structural schema; it rejects bad specs with a message that names the field;
the server fills in the same defaults the operator's parser assumes; `kubectl explain` shows the
field descriptions; every example applies. Most checks use `--dry-run=server`, which runs
admission, defaulting and validation in full but stores nothing, so no operator acts on them.
"""

from __future__ import annotations

import json
import pathlib
import time

import pytest
import yaml

from torchyard.api import trainingjob as tj

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_NAME = f"{tj.PLURAL}.{tj.GROUP}"
CRD = yaml.safe_load((ROOT / "crds" / "trainingjob.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
EXAMPLES = sorted(
    path for path in (ROOT / "examples").glob("*.yaml")
    if any(doc and doc.get("kind") == tj.KIND for doc in yaml.safe_load_all(path.read_text()))
)


def _text(out) -> str:
    return out.decode() if isinstance(out, bytes) else (out or "")


def _job(name: str, spec: dict) -> dict:
    return {"apiVersion": tj.API_VERSION, "kind": tj.KIND, "metadata": {"name": name}, "spec": spec}


def _send(cluster, namespace, verb: str, doc: dict, *extra: str):
    return cluster.kubectl(verb, "-n", namespace, "-f", "-", *extra, input=yaml.safe_dump(doc), check=False)


def _description(path: str) -> str:
    node = SCHEMA
    for key in path.split("."):
        node = node["properties"][key]
    return " ".join(node["description"].split())


def test_crd_is_established_with_a_structural_schema(cluster, crds):
    crd = json.loads(_text(cluster.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout))
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True"
    assert "NonStructuralSchema" not in conditions
    again = cluster.kubectl("apply", "--dry-run=server", "-f", str(ROOT / "crds" / "trainingjob.yaml"), check=False)
    assert again.returncode == 0, _text(again.stderr)


BAD_SPECS = [  # id, spec, what stderr must contain: the field path and the gist of the message
    ("missing-worker", {"strategy": "AllReduce"}, ["spec.worker", "Required value"]),
    ("replicas-0", {"worker": {"replicas": 0}}, ["spec.worker.replicas", "greater than or equal to 1"]),
    ("gpus-negative", {"worker": {"gpus": -1}}, ["spec.worker.gpus", "greater than or equal to 0"]),
    ("ps-without-parameterServer", {"strategy": "ParameterServer", "worker": {}},
     ["spec.parameterServer", "required when spec.strategy is ParameterServer"]),
    ("allreduce-with-parameterServer", {"strategy": "AllReduce", "worker": {}, "parameterServer": {"replicas": 1}},
     ["spec.parameterServer", "must be omitted when spec.strategy is AllReduce"]),
    ("pod-label-reserved", {"worker": {"template": {"metadata": {"labels": {"torchyard.dev/job-name": "x"}}}}},
     ["spec.worker.template.metadata.labels", "must not set keys under torchyard.dev/"]),
    ("ps-pod-annotation-reserved",
     {"strategy": "ParameterServer", "worker": {},
      "parameterServer": {"template": {"metadata": {"annotations": {"kueue.x-k8s.io/x": "1"}}}}},
     ["spec.parameterServer.template.metadata.annotations"]),
    ("unknown-strategy", {"strategy": "Ring", "worker": {}}, ["spec.strategy", "Unsupported value"]),
    ("unknown-restartPolicy", {"worker": {}, "runPolicy": {"restartPolicy": "Always"}},
     ["spec.runPolicy.restartPolicy", "Unsupported value"]),
    ("backoffLimit-negative", {"worker": {}, "runPolicy": {"backoffLimit": -1}}, ["spec.runPolicy.backoffLimit"]),
    ("misspelled-field", {"worker": {"replica": 2}}, ["spec.worker.replica"]),
    ("sparsity-1", {"worker": {}, "trainer": {"compression": {"pruning": {"sparsity": 1.0}}}},
     ["spec.trainer.compression.pruning.sparsity"]),
    ("sparsity-and-threshold",
     {"worker": {}, "trainer": {"compression": {"pruning": {"sparsity": 0.5, "threshold": 0.1}}}},
     ["spec.trainer.compression.pruning", "exactly one of pruning.sparsity or pruning.threshold"]),
    ("two-teachers",
     {"worker": {}, "trainer": {"compression": {"distillation": {"teacherPath": "/m", "teacher": {"modelVersion": "a-1"}}}}},
     ["spec.trainer.compression.distillation", "exactly one of"]),
    ("file-dataset-without-path", {"worker": {}, "trainer": {"dataset": {"name": "file"}}},
     ["spec.trainer.dataset.path", "dataset.path is required"]),
    ("epochs-0", {"worker": {}, "trainer": {"epochs": 0}}, ["spec.trainer.epochs"]),
]


@pytest.mark.parametrize("name, spec, expected", BAD_SPECS, ids=[case[0] for case in BAD_SPECS])
def test_api_server_rejects_bad_spec_naming_the_field(cluster, crds, namespace, name, spec, expected):
    result = _send(cluster, namespace, "apply", _job(f"bad-{name}", spec), "--dry-run=server")
    stderr = _text(result.stderr)
    assert result.returncode != 0, f"accepted: {spec}"
    assert [word for word in expected if word not in stderr] == [], stderr


def test_unknown_model_name_is_left_for_the_operator_to_report(cluster, crds, namespace):
    spec = {"worker": {}, "trainer": {"model": {"name": "resnet"}, "dataset": {"name": "imagenet"}}}
    result = _send(cluster, namespace, "apply", _job("unknown-model", spec), "--dry-run=server")
    assert result.returncode == 0, _text(result.stderr)


def test_strategy_cannot_change_after_creation(cluster, crds, namespace):
    original = _job("fixed-strategy", {"worker": {}, "runPolicy": {"suspend": True}})
    created = _send(cluster, namespace, "create", original)
    assert created.returncode == 0, _text(created.stderr)
    try:
        changed = _job("fixed-strategy", {"strategy": "ParameterServer", "worker": {}, "parameterServer": {},
                                          "runPolicy": {"suspend": True}})
        result = _send(cluster, namespace, "apply", changed, "--dry-run=server")
        assert result.returncode != 0
        assert "spec.strategy" in _text(result.stderr) and "immutable" in _text(result.stderr)
        unchanged = _send(cluster, namespace, "apply", original, "--dry-run=server")
        assert unchanged.returncode == 0, _text(unchanged.stderr)
    finally:
        cluster.kubectl("delete", "-n", namespace, "trainingjob", "fixed-strategy", "--wait=false", check=False)


def test_printer_columns_and_category(cluster, crds, namespace):
    created = _send(cluster, namespace, "create", _job("columns", {"worker": {"replicas": 3}, "runPolicy": {"suspend": True}}))
    assert created.returncode == 0, _text(created.stderr)
    try:
        table = _text(cluster.kubectl("get", "-n", namespace, "tj").stdout).splitlines()
        assert table[0].split() == ["NAME", "STRATEGY", "WORKERS", "PS", "PHASE", "PROGRESS", "AGE"]
        assert table[1].split()[:3] == ["columns", "AllReduce", "3"]
        names = _text(cluster.kubectl("get", "-n", namespace, "torchyard", "-o", "name").stdout).split()
        assert f"{tj.PLURAL[:-1]}.{tj.GROUP}/columns" in names
    finally:
        cluster.kubectl("delete", "-n", namespace, "trainingjob", "columns", "--wait=false", check=False)


def test_server_applies_the_defaults_the_parser_assumes(cluster, crds, namespace):
    minimal = _job("defaults", {"worker": {}})
    result = _send(cluster, namespace, "create", minimal, "--dry-run=server", "-o", "json")
    assert result.returncode == 0, _text(result.stderr)
    stored = json.loads(_text(result.stdout))
    assert stored["spec"]["strategy"] == "AllReduce"
    assert stored["spec"]["worker"] == {"replicas": 1, "gpus": 0}
    assert stored["spec"]["runPolicy"] == {
        "backoffLimit": 3, "cleanPodPolicy": "Running", "suspend": False,
        "restartPolicy": "OnFailure", "restartScope": "Gang", "gangScheduling": False,
    }
    stored["metadata"]["namespace"] = minimal["metadata"]["namespace"] = namespace
    assert tj.parse_training_job(stored).spec == tj.parse_training_job(minimal).spec


def _contains(big, small) -> bool:
    """True when every field of `small` is in `big` with the same value (defaults may be added)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(big) == len(small) and all(map(_contains, big, small))
    return big == small


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_applies_and_keeps_every_field(cluster, crds, namespace, path):
    result = cluster.kubectl("apply", "-n", namespace, "--dry-run=server", "-o", "json", "-f", str(path), check=False)
    assert result.returncode == 0, _text(result.stderr)
    returned = json.loads(_text(result.stdout))
    sent = next(doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == tj.KIND)
    assert _contains(returned["spec"], sent["spec"]), "the server pruned or changed a field of the example"


@pytest.mark.parametrize("field", ["spec.runPolicy.restartScope", "spec.worker.template", "spec.trainer.model.name"])
def test_kubectl_explain_prints_the_description(cluster, crds, field):
    wanted = _description(field)[:60]
    deadline, output = time.monotonic() + 60, ""
    while time.monotonic() < deadline:  # the OpenAPI document is published a few seconds after the CRD
        result = cluster.kubectl("explain", f"trainingjob.{field}", check=False)
        output = " ".join(_text(result.stdout).split())
        if result.returncode == 0 and wanted in output:
            break
        time.sleep(2)
    assert wanted in output
