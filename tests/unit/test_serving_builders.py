"""Serving manifests against golden YAML, and the rules the switch relies on.

Regenerate the golden file after an intended change with
`UPDATE_GOLDEN=1 pytest tests/unit/test_serving_builders.py` and review the diff.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from serving import md, version
from torchyard.builders.serving import (build_deployment, build_service, deployment_update, selected_version,
                                        selector_patch)
from torchyard.settings import Settings
from torchyard_spec import contract

GOLDEN = Path(__file__).parent / "golden" / "serving-digits.yaml"
SETTINGS = Settings(trainer_image="torchyard/trainer:test")
SPEC = {"replicas": 2, "server": {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}}


def test_manifests_match_golden():
    deployment = md(**SPEC)
    actual = yaml.safe_dump_all([build_deployment(deployment, version(3), 2, SETTINGS), build_service(deployment, 3)],
                                sort_keys=False)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(actual)
    assert actual == GOLDEN.read_text(), "serving manifests changed; if intended, regenerate with UPDATE_GOLDEN=1"


def test_the_artifact_is_mounted_read_only_and_checked_by_digest():
    manifest = build_deployment(md(), version(3), 1, SETTINGS)
    pod = manifest["spec"]["template"]["spec"]
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert claim["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    container = pod["containers"][0]
    assert all(m["readOnly"] for m in container["volumeMounts"] if m["name"] == claim["name"])
    args = container["args"]
    assert args[args.index("--model-dir") + 1] == "/var/lib/torchyard/models/digits/run-3"
    assert args[args.index("--sha256") + 1] == f"{3:064x}"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert manifest["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"


def test_batching_reaches_the_server_only_when_asked_for():
    def args(**server):
        return build_deployment(md(server=server), version(3), 1, SETTINGS)["spec"]["template"]["spec"]["containers"][0]["args"]

    assert not any(a.startswith("--batch") for a in args())
    assert not any(a.startswith("--batch") for a in args(batching={"maxBatchSize": 1, "maxWaitMilliseconds": 5}))
    batched = args(batching={"maxBatchSize": 32, "maxWaitMilliseconds": 2.5})
    assert batched[batched.index("--batch-max-size") + 1] == "32"
    assert batched[batched.index("--batch-max-wait-ms") + 1] == "2.5"


def test_an_artifact_in_s3_mounts_no_claim_and_gets_the_storage_secret():
    import dataclasses

    s3 = dataclasses.replace(version(3), artifact=dataclasses.replace(
        version(3).artifact, path="s3://models/digits/run-3", claim_name=None))
    pod = build_deployment(md(storage={"claimName": "models", "secretName": "s3-creds"}), s3, 1, SETTINGS)
    pod = pod["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    container = pod["containers"][0]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert refs == {key: {"name": "s3-creds", "key": key} for key in contract.S3_REQUIRED_KEYS} | {
        "AWS_REGION": {"name": "s3-creds", "key": "AWS_REGION", "optional": True}}
    assert container["args"][container["args"].index("--model-dir") + 1] == "s3://models/digits/run-3"
    # A version on a claim gets neither the secret nor a changed template.
    on_claim = build_deployment(md(storage={"claimName": "models", "secretName": "s3-creds"}), version(3), 1, SETTINGS)
    assert "env" not in on_claim["spec"]["template"]["spec"]["containers"][0]


def test_the_deployments_claim_overrides_the_versions():
    manifest = build_deployment(md(storage={"claimName": "serving-copy"}), version(3), 1, SETTINGS)
    volumes = manifest["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["persistentVolumeClaim"]["claimName"] == "serving-copy"


def test_the_selector_always_names_model_deployment_and_version():
    deployment = md()
    patch = selector_patch(deployment, 2)["spec"]["selector"]
    assert patch == {"torchyard.dev/model": "digits", "torchyard.dev/model-deployment": "digits",
                     "torchyard.dev/version": "2"}
    # The Service selects the pods its version's Deployment makes, and no other version's.
    pod_labels = build_deployment(deployment, version(2), 1, SETTINGS)["spec"]["template"]["metadata"]["labels"]
    other = build_deployment(deployment, version(3), 1, SETTINGS)["spec"]["template"]["metadata"]["labels"]
    selector = build_service(deployment, 2)["spec"]["selector"]
    assert selector.items() <= pod_labels.items() and not selector.items() <= other.items()


def test_a_deployment_that_matches_needs_no_patch_and_a_scale_change_patches_only_replicas():
    deployment = md()
    existing = build_deployment(deployment, version(3), 1, SETTINGS)
    assert deployment_update(build_deployment(deployment, version(3), 1, SETTINGS), existing) is None
    assert deployment_update(build_deployment(deployment, version(3), 0, SETTINGS), existing) == {"spec": {"replicas": 0}}


def test_a_new_server_image_rolls_the_template():
    existing = build_deployment(md(), version(3), 1, SETTINGS)
    desired = build_deployment(md(server={"image": "torchyard/trainer:next"}), version(3), 1, SETTINGS)
    patch = deployment_update(desired, existing)
    assert patch["spec"]["template"]["spec"]["containers"][0]["image"] == "torchyard/trainer:next"
    assert "replicas" not in patch["spec"]


def test_selected_version_reads_the_service():
    service = build_service(md(), 4)
    assert selected_version(service) == 4
    assert selected_version(None) is None
    broken = copy.deepcopy(service)
    del broken["spec"]["selector"]["torchyard.dev/version"]
    assert selected_version(broken) is None
