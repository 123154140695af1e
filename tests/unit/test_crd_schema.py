"""The TrainingJob CRD (crds/trainingjob.yaml) checked against the operator's parser and the examples.

The schema is what the API server enforces and `kubectl explain` shows; the parser
(torchyard.api.trainingjob) is what the operator enforces. These tests keep both describing one
resource: the same fields, names, enums and defaults, and errors that name the same field.
"""

from __future__ import annotations

import copy
import pathlib
import re

import pytest
import yaml

from torchyard.api import trainingjob as tj
from torchyard.api.errors import SpecError
from torchyard.api.fields import Fields
from torchyard_spec import catalog

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "trainingjob.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def walk(node: dict, path: str = ""):
    """Every sub-schema with its path: `a.b` for properties, `a[]` for items, `a{}` for map values."""
    for key, sub in node.get("properties", {}).items():
        child = f"{path}.{key}" if path else key
        yield child, sub
        yield from walk(sub, child)
    if "items" in node:
        yield f"{path}[]", node["items"]
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield f"{path}{{}}", node["additionalProperties"]
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def node_at(path: str) -> dict | None:
    """The schema of a dotted field path such as `spec.worker.replicas`, or None if undeclared."""
    node = SCHEMA
    for key in path.split("."):
        node = node.get("properties", {}).get(key)
        if node is None:
            return None
    return node


def validate(node: dict, value, path: str) -> list[str]:
    """Errors of `value` against the structural-schema subset the CRD uses; each starts with its path."""
    if node.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, (int, str)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: must be an integer or a string"]
    kind = node["type"]
    if not TYPES[kind](value):
        return [f"{path}: must be {kind}"]
    errors = [f"{path}: {problem}" for problem in _value_problems(node, value)]
    if kind == "object":
        errors += [f"{path}.{key}: is required" for key in node.get("required", []) if key not in value]
        for key, item in value.items():
            sub = node.get("properties", {}).get(key, node.get("additionalProperties"))
            if isinstance(sub, dict):
                errors += validate(sub, item, f"{path}.{key}")
            elif not node.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{key}: unknown field")
    if kind == "array":
        for index, item in enumerate(value):
            errors += validate(node["items"], item, f"{path}[{index}]")
    return errors


def _value_problems(node: dict, value) -> list[str]:
    problems = []
    if "enum" in node and value not in node["enum"]:
        problems.append(f"must be one of {node['enum']}")
    if "minimum" in node and (value <= node["minimum"] if node.get("exclusiveMinimum") else value < node["minimum"]):
        problems.append(f"below the minimum {node['minimum']}")
    if "maximum" in node and (value >= node["maximum"] if node.get("exclusiveMaximum") else value > node["maximum"]):
        problems.append(f"above the maximum {node['maximum']}")
    if "pattern" in node and not re.search(node["pattern"], value):
        problems.append(f"does not match {node['pattern']}")
    if len(value) < node.get("minLength", 0) if isinstance(value, str) else False:
        problems.append("is too short")
    return problems


def apply_defaults(node: dict, value):
    """What the API server's defaulting does: fill absent fields top-down, `{}` parents first."""
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(sub, value[key])
    elif isinstance(value, list) and "items" in node:
        for item in value:
            apply_defaults(node["items"], item)
    return value


def job(spec) -> dict:
    return {"apiVersion": tj.API_VERSION, "kind": tj.KIND, "metadata": {"name": "j", "namespace": "ns"}, "spec": spec}


def example_documents():
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == tj.KIND:
                yield pytest.param(doc, id=path.name)


def test_resource_names_version_and_status_subresource():
    assert CRD["metadata"]["name"] == f"{tj.PLURAL}.{tj.GROUP}"
    names = CRD["spec"]["names"]
    assert (CRD["spec"]["group"], names["kind"], names["plural"]) == (tj.GROUP, tj.KIND, tj.PLURAL)
    assert names["shortNames"] == ["tj"] and names["categories"] == ["torchyard"]
    assert CRD["spec"]["scope"] == "Namespaced"
    assert (VERSION["name"], VERSION["served"], VERSION["storage"]) == (tj.VERSION, True, True)
    assert VERSION["subresources"] == {"status": {}}


def test_every_field_at_every_depth_has_a_description():
    missing = [path for path, node in walk(SCHEMA) if path != "metadata" and not node.get("description", "").strip()]
    assert missing == []


def test_every_field_has_a_type_the_api_server_accepts():
    untyped = [p for p, n in walk(SCHEMA) if n.get("type") not in TYPES and not n.get("x-kubernetes-int-or-string")]
    assert untyped == []


def test_both_roles_share_one_schema():
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert spec["worker"]["properties"] == spec["parameterServer"]["properties"]


@pytest.mark.parametrize(
    "path, allowed",
    [
        ("spec.strategy", tj.STRATEGIES),
        ("spec.runPolicy.restartPolicy", tj.RESTART_POLICIES),
        ("spec.runPolicy.restartScope", tj.RESTART_SCOPES),
        ("spec.runPolicy.cleanPodPolicy", tj.CLEAN_POD_POLICIES),
        ("spec.trainer.optimizer.name", catalog.OPTIMIZERS),
        ("spec.trainer.metric", catalog.METRICS),
        ("spec.trainer.parameterServer.mode", catalog.PS_MODES),
        ("spec.trainer.compression.pruning.method", catalog.PRUNING_METHODS),
    ],
)
def test_enums_are_the_values_the_parser_accepts(path, allowed):
    assert node_at(path)["enum"] == list(allowed)


@pytest.mark.parametrize("path, names", [("spec.trainer.model.name", catalog.MODELS), ("spec.trainer.dataset.name", catalog.DATASETS)])
def test_bundled_names_are_free_strings_listed_in_the_description(path, names):
    node = node_at(path)
    assert "enum" not in node, "an unknown name must reach the operator, which fails the job naming the field"
    assert [name for name in names if name not in node["description"]] == []


MINIMAL = {"worker": {}}
DEFAULTS = {  # schema path -> the parser's value for a spec that leaves the field out
    "spec.strategy": lambda s: s.strategy,
    "spec.worker.replicas": lambda s: s.worker.replicas,
    "spec.worker.gpus": lambda s: s.worker.gpus,
    "spec.parameterServer.replicas": lambda s: s.worker.replicas,
    "spec.parameterServer.gpus": lambda s: s.worker.gpus,
    "spec.runPolicy.backoffLimit": lambda s: s.run_policy.backoff_limit,
    "spec.runPolicy.cleanPodPolicy": lambda s: s.run_policy.clean_pod_policy,
    "spec.runPolicy.suspend": lambda s: s.run_policy.suspend,
    "spec.runPolicy.restartPolicy": lambda s: s.run_policy.restart_policy,
    "spec.runPolicy.restartScope": lambda s: s.run_policy.restart_scope,
    "spec.runPolicy.gangScheduling": lambda s: s.run_policy.gang_scheduling,
    "spec.storage.checkpointDir": lambda s: s.storage.checkpoint_dir,
    "spec.storage.modelDir": lambda s: s.storage.model_dir,
}


@pytest.mark.parametrize("path", sorted(DEFAULTS))
def test_schema_default_equals_the_parser_default(path):
    parsed = tj.parse_training_job(job(MINIMAL)).spec
    assert node_at(path)["default"] == DEFAULTS[path](parsed)


def test_every_scalar_default_in_the_schema_is_checked_against_the_parser():
    scalar_defaults = {p for p, n in walk(SCHEMA) if "default" in n and n["default"] != {}}
    assert scalar_defaults == set(DEFAULTS)


@pytest.mark.parametrize("spec", [MINIMAL, {"strategy": "ParameterServer", "worker": {}, "parameterServer": {}}])
def test_server_side_defaulting_changes_nothing_the_operator_sees(spec):
    defaulted = apply_defaults(SCHEMA, job(copy.deepcopy(spec)))
    assert defaulted["spec"]["runPolicy"]["restartScope"] == "Gang"  # the `{}` parent default took effect
    assert tj.parse_training_job(defaulted) == tj.parse_training_job(job(spec))


@pytest.fixture
def read_paths(monkeypatch):
    """Every field path the parser looks at while parsing."""
    seen: set[str] = set()
    original = Fields._get

    def recording(self, key, required):
        seen.add(f"{self.path}.{key}")
        return original(self, key, required)

    monkeypatch.setattr(Fields, "_get", recording)
    return seen


READ_SPECS = [
    {"strategy": "ParameterServer", "worker": {}, "parameterServer": {}},
    {"worker": {}, "trainer": {
        "model": {"name": "module", "module": "pkg.mod:build"}, "dataset": {"name": "file", "path": "/d.npz"},
        "compression": {"pruning": {"sparsity": 0.5}, "distillation": {"teacherPath": "/m"}}}},
    {"worker": {}, "trainer": {"dataset": {"name": "module", "module": "pkg.data:load"}}},
]


def test_every_field_the_parser_reads_is_declared_in_the_schema(read_paths):
    for spec in READ_SPECS:
        tj.parse_training_job(job(spec))
    assert sorted(p for p in read_paths if node_at(p) is None) == []


def test_every_schema_field_outside_trainer_is_read_by_the_parser(read_paths):
    tj.parse_training_job(job(READ_SPECS[0]))
    leaves = [p for p in read_paths if not any(q.startswith(p + ".") for q in read_paths)]
    unread = [
        path for path, _ in walk(SCHEMA["properties"]["spec"], "spec")
        if not path.startswith("spec.trainer.")
        and path not in read_paths
        and not any(path.startswith(leaf) and path[len(leaf)] in ".[{" for leaf in leaves)
    ]
    assert unread == [], "the schema declares fields the operator silently ignores"


def test_the_five_documented_examples_exist():
    assert {"digits-ddp.yaml", "digits-ps.yaml", "gpu-ddp.yaml", "custom-script.yaml", "pruned-distilled.yaml"} <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("doc", list(example_documents()))
def test_example_parses_and_matches_the_schema(doc):
    parsed = tj.parse_training_job(doc)
    assert doc["apiVersion"] == tj.API_VERSION and parsed.name
    assert validate(SCHEMA["properties"]["spec"], doc["spec"], "spec") == []
    assert doc["metadata"].get("namespace") is None, "examples apply to whatever namespace the user picks"


PRINTER_COLUMNS = [
    ("Strategy", ".spec.strategy", "string"),
    ("Workers", ".spec.worker.replicas", "integer"),
    ("PS", ".spec.parameterServer.replicas", "integer"),
    ("Phase", ".status.phase", "string"),
    ("Progress", ".status.progress.percent", "number"),
    ("Age", ".metadata.creationTimestamp", "date"),
]


def test_printer_columns_show_declared_fields_with_descriptions():
    columns = VERSION["additionalPrinterColumns"]
    assert [(c["name"], c["jsonPath"], c["type"]) for c in columns] == PRINTER_COLUMNS
    assert all(c.get("description") for c in columns)
    for name, path, kind in PRINTER_COLUMNS[:-1]:
        assert node_at(path[1:])["type"] == kind, name


CEL_RULES = [  # where, words in the rule, fieldPath, words in the message
    ("spec", "has(self.parameterServer)", ".parameterServer", "spec.parameterServer is required"),
    ("spec", "!has(self.parameterServer)", ".parameterServer", "spec.parameterServer must be omitted"),
    ("spec.strategy", "self == oldSelf", None, "spec.strategy is immutable"),
    ("spec.worker.template.metadata.labels", "startsWith('torchyard.dev/')", None, "template.metadata.labels must not"),
    ("spec.worker.template.metadata.annotations", "startsWith('kueue.x-k8s.io/')", None,
     "template.metadata.annotations must not"),
    ("spec.trainer.compression.pruning", "has(self.sparsity) != has(self.threshold)", None, "exactly one of pruning.sparsity"),
    ("spec.trainer.compression.distillation", "has(self.teacher) != has(self.teacherPath)", None, "exactly one of distillation.teacher"),
    ("spec.trainer.dataset", "self.name != 'file' || has(self.path)", ".path", "dataset.path is required"),
]


@pytest.mark.parametrize("where, rule, field_path, message", CEL_RULES)
def test_cross_field_rule_is_present_with_a_message_naming_the_field(where, rule, field_path, message):
    rules = node_at(where)["x-kubernetes-validations"]
    found = [r for r in rules if rule in r["rule"] and message in r["message"]]
    assert len(found) == 1 and found[0].get("fieldPath") == field_path
    if field_path:
        assert field_path[1:] in node_at(where)["properties"]


def test_sparsity_range_is_zero_inclusive_to_one_exclusive():
    sparsity = node_at("spec.trainer.compression.pruning.sparsity")
    assert (sparsity["minimum"], sparsity["maximum"], sparsity.get("exclusiveMaximum")) == (0, 1, True)


BAD_SPECS = [  # spec, field the parser names, what the schema does: "same" path, "cel" rule, or "operator"
    ({}, "spec.worker", "same"),
    ({"worker": {"replicas": 0}}, "spec.worker.replicas", "same"),
    ({"worker": {"replicas": "2"}}, "spec.worker.replicas", "same"),
    ({"worker": {"gpus": -1}}, "spec.worker.gpus", "same"),
    ({"worker": {"gpus": 65}}, "spec.worker.gpus", "same"),
    ({"worker": {"replicas": 1001}}, "spec.worker.replicas", "same"),
    ({"strategy": "Ring", "worker": {}}, "spec.strategy", "same"),
    ({"strategy": "ParameterServer", "worker": {}}, "spec.parameterServer", "cel"),
    ({"worker": {}, "parameterServer": {}}, "spec.parameterServer", "cel"),
    ({"strategy": "ParameterServer", "worker": {}, "parameterServer": {"replicas": 0}}, "spec.parameterServer.replicas", "same"),
    ({"worker": {}, "runPolicy": {"restartPolicy": "Always"}}, "spec.runPolicy.restartPolicy", "same"),
    ({"worker": {}, "runPolicy": {"restartScope": "Job"}}, "spec.runPolicy.restartScope", "same"),
    ({"worker": {}, "runPolicy": {"cleanPodPolicy": "Some"}}, "spec.runPolicy.cleanPodPolicy", "same"),
    ({"worker": {}, "runPolicy": {"backoffLimit": -1}}, "spec.runPolicy.backoffLimit", "same"),
    ({"worker": {}, "runPolicy": {"activeDeadlineSeconds": 0}}, "spec.runPolicy.activeDeadlineSeconds", "same"),
    ({"worker": {}, "runPolicy": {"ttlSecondsAfterFinished": -1}}, "spec.runPolicy.ttlSecondsAfterFinished", "same"),
    ({"worker": {}, "runPolicy": {"startupDeadlineSeconds": 0}}, "spec.runPolicy.startupDeadlineSeconds", "same"),
    ({"worker": {}, "runPolicy": {"progressDeadlineSeconds": 5}}, "spec.runPolicy.progressDeadlineSeconds", "same"),
    ({"worker": {}, "runPolicy": {"progressDeadlineSeconds": 604801}}, "spec.runPolicy.progressDeadlineSeconds", "same"),
    ({"worker": {}, "runPolicy": {"suspend": "yes"}}, "spec.runPolicy.suspend", "same"),
    ({"worker": {"nodeSelector": "gpu"}}, "spec.worker.nodeSelector", "same"),
    ({"worker": {"tolerations": {"key": "gpu"}}}, "spec.worker.tolerations", "same"),
    ({"worker": {"template": {"command": "python train.py"}}}, "spec.worker.template.command", "same"),
    ({"worker": {"template": {"env": ["A=1"]}}}, "spec.worker.template.env", "same"),
    ({"worker": {"nprocPerNode": 0}}, "spec.worker.nprocPerNode", "same"),
    ({"worker": {"nprocPerNode": 65}}, "spec.worker.nprocPerNode", "same"),
    ({"worker": {"template": {"metadata": {"labels": {"torchyard.dev/role": "x"}}}}},
     "spec.worker.template.metadata.labels", "cel"),
    ({"worker": {"template": {"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "q"}}}}},
     "spec.worker.template.metadata.labels", "cel"),
    ({"worker": {"template": {"metadata": {"labels": {"app.kubernetes.io/managed-by": "me"}}}}},
     "spec.worker.template.metadata.labels", "cel"),
    ({"worker": {"template": {"metadata": {"annotations": {"torchyard.dev/x": "1"}}}}},
     "spec.worker.template.metadata.annotations", "cel"),
    ({"worker": {"template": {"metadata": {"labels": {"team": 7}}}}}, "spec.worker.template.metadata.labels.team", "same"),
    ({"worker": {"template": {"imagePullSecrets": [{}]}}}, "spec.worker.template.imagePullSecrets[0].name", "same"),
    ({"worker": {"template": {"securityContext": {"runAsUser": -1}}}}, "spec.worker.template.securityContext.runAsUser", "same"),
    ({"worker": {"template": {"securityContext": {"privileged": True}}}},
     "spec.worker.template.securityContext.privileged", "same"),
    ({"worker": {}, "storage": "pvc"}, "spec.storage", "same"),
    ({"worker": {}, "trainer": {"model": {"name": "resnet"}}}, "spec.trainer.model.name", "operator"),
    ({"worker": {}, "trainer": {"dataset": {"name": "imagenet"}}}, "spec.trainer.dataset.name", "operator"),
    ({"worker": {}, "trainer": {"dataset": {"name": "file"}}}, "spec.trainer.dataset.path", "cel"),
    ({"worker": {}, "trainer": {"dataset": {"name": "module"}}}, "spec.trainer.dataset.module", "cel"),
    ({"worker": {}, "trainer": {"model": {"name": "module", "module": "pkg.mod.fn"}}}, "spec.trainer.model.module", "same"),
    ({"worker": {}, "trainer": {"epochs": 0}}, "spec.trainer.epochs", "same"),
    ({"worker": {}, "trainer": {"batchSize": 0}}, "spec.trainer.batchSize", "same"),
    ({"worker": {}, "trainer": {"checkpointEverySteps": -1}}, "spec.trainer.checkpointEverySteps", "same"),
    ({"worker": {}, "trainer": {"metric": "f1"}}, "spec.trainer.metric", "same"),
    ({"worker": {}, "trainer": {"optimizer": {"name": "lamb"}}}, "spec.trainer.optimizer.name", "same"),
    ({"worker": {}, "trainer": {"optimizer": {"learningRate": 0}}}, "spec.trainer.optimizer.learningRate", "same"),
    ({"worker": {}, "trainer": {"parameterServer": {"mode": "Hogwild"}}}, "spec.trainer.parameterServer.mode", "same"),
    ({"worker": {}, "trainer": {"compression": {"pruning": {"method": "random", "sparsity": 0.5}}}}, "spec.trainer.compression.pruning.method", "same"),
    ({"worker": {}, "trainer": {"compression": {"pruning": {"sparsity": 1.5}}}}, "spec.trainer.compression.pruning.sparsity", "same"),
    ({"worker": {}, "trainer": {"compression": {"distillation": {"teacherPath": "/m", "temperature": 0}}}}, "spec.trainer.compression.distillation.temperature", "same"),
    ({"worker": {}, "trainer": {"compression": {"distillation": {"teacherPath": "/m", "alpha": 1.5}}}}, "spec.trainer.compression.distillation.alpha", "same"),
]


@pytest.mark.parametrize("spec, field, schema", BAD_SPECS, ids=[case[1] for case in BAD_SPECS])
def test_bad_spec_is_rejected_naming_the_field(spec, field, schema):
    with pytest.raises(SpecError) as caught:
        tj.parse_training_job(job(spec))
    assert caught.value.field == field and str(caught.value).startswith(field + " ")
    errors = validate(SCHEMA["properties"]["spec"], spec, "spec")
    if schema == "same":
        assert any(e.startswith(field) for e in errors), errors
    elif schema == "operator":
        assert errors == [], "the schema must let this through for the operator to report it"


def test_spec_that_is_not_an_object_names_spec():
    with pytest.raises(SpecError) as caught:
        tj.parse_training_job({"metadata": {"name": "j"}, "spec": ["worker"]})
    assert caught.value.field == "spec"


def test_schema_rejects_an_unknown_field_by_its_path():
    assert validate(SCHEMA["properties"]["spec"], {"worker": {"replica": 2}}, "spec") == ["spec.worker.replica: unknown field"]


def test_roles_running_their_own_command_skip_the_bundled_trainer_checks():
    spec = {"worker": {"template": {"image": "team/train:1", "command": ["torchrun", "t.py"]}}, "trainer": {"model": {"name": "resnet"}}}
    assert tj.parse_training_job(job(spec)).spec.worker.custom


def test_a_role_with_its_own_image_and_no_command_runs_that_image_not_the_bundled_trainer():
    spec = {"worker": {"template": {"image": "team/train:1"}}, "trainer": {"model": {"name": "resnet"}}}
    parsed = tj.parse_training_job(job(spec)).spec
    assert parsed.worker.custom and parsed.trainer_settings is None
    assert validate(SCHEMA["properties"]["spec"], spec, "spec") == []


SCHEMA_RULES_THE_PARSER_REPEATS = [  # CEL rules of the schema, repeated for files that never meet an API server
    {"worker": {"template": {"metadata": {"labels": {"torchyard.dev/job-name": "other"}}}}},
    {"worker": {}, "trainer": {"compression": {"pruning": {"sparsity": 1.0}}}},
    {"worker": {}, "trainer": {"compression": {"pruning": {"sparsity": 0.5, "threshold": 0.01}}}},
    {"worker": {}, "trainer": {"compression": {"pruning": {"method": "structured-channel"}}}},
    {"worker": {}, "trainer": {"compression": {"distillation": {"alpha": 0.5}}}},
]


@pytest.mark.parametrize("spec", SCHEMA_RULES_THE_PARSER_REPEATS)
def test_parser_repeats_the_schema_rule(spec):
    with pytest.raises(SpecError):
        tj.parse_training_job(job(spec))


def _status_sequence():
    """Statuses the operator's reconcile computes along one job's life, each from the one before."""
    from jobs import NOW, PARAMETER_SERVER, job, pod
    from torchyard.reconcile.decide import Observed, decide, invalid_spec

    report = {"step": 10, "totalSteps": 100, "epoch": 1.5, "loss": 0.4, "samplesPerSecond": 900.0,
              "percent": 10.0, "etaSeconds": 30.0, "updateTime": "2026-01-01T12:00:00Z"}
    result = '{"metrics": {"accuracy": 0.97}, "metric": "accuracy", "steps": 100, "artifact": {"path": "/m", "sha256": "ab"}}'
    steps = [
        (job(), ()),
        (job(), (pod("worker", 0), pod("worker", 1))),
        (job(), (pod("worker", 0), pod("worker", 1, "Unknown"))),
        (job(), (pod("worker", 0), pod("worker", 1, "Failed", reason="Evicted"))),
        (job(), (pod("worker", 0, attempt=1), pod("worker", 1, "Failed", attempt=1, exit_code=137, reason="OOMKilled"))),
        (job(restartScope="Pod"), (pod("worker", 0, attempt=2), pod("worker", 1, "Failed", attempt=2, exit_code=137))),
        (job(), (pod("worker", 0, "Succeeded", attempt=2, message=result), pod("worker", 1, "Succeeded", attempt=2))),
        (job(PARAMETER_SERVER), (pod("ps", 0, job_name="ps"), pod("worker", 0, job_name="ps"))),
    ]
    status: dict = {"progress": report}
    for parsed, pods in steps:
        previous = {"progress": report} if parsed.name != steps[0][0].name else status
        status = decide(parsed, previous, Observed(pods=pods, service_exists=True, now=NOW)).status
        yield status
    yield invalid_spec({}, "spec.trainer.model.name", "must be one of mlp, cnn, module", NOW, 1)


def test_every_status_the_operator_writes_fits_the_status_schema():
    """A field the schema lacks is pruned by the API server: the operator would lose it and patch again."""
    for status in _status_sequence():
        assert validate(SCHEMA["properties"]["status"], copy.deepcopy(status), "status") == []
