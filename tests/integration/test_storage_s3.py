"""A TrainingJob whose spec.storage is an S3-compatible URI, on a real API server with the operator.

The pods get the run's s3:// checkpoint and model locations through the contract and the Secret's
keys as secretKeyRef variables (its values appear nowhere in the pod); a succeeded job registers a
ModelVersion that records the URI and the digest and no claim; an ill-formed storage spec is
refused by the API server naming the field (the wider table is in bad_specs.py).
"""

from __future__ import annotations

import json

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from harness.waits import wait_for
from torchyard_spec import contract

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "torchyard.dev", "v1alpha1", "trainingjobs"
SECRET_VALUES = {"AWS_ENDPOINT_URL": "http://objects.example:7070", "AWS_ACCESS_KEY_ID": "key-id-7f3a",
                 "AWS_SECRET_ACCESS_KEY": "secret-value-9c2e41"}


def trainingjob(name: str, storage: dict) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"strategy": "AllReduce", "worker": {"replicas": 2}, "modelName": "digits", "storage": storage,
                     "trainer": {"model": {"name": "mlp"}, "dataset": {"name": "digits"}, "epochs": 1}}}


@pytest.fixture
def secret(cluster, namespace):
    cluster.core.create_namespaced_secret(namespace, {"metadata": {"name": "s3-creds"}, "stringData": SECRET_VALUES})
    return "s3-creds"


def create(cluster, namespace, obj) -> dict:
    return cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, obj)


def job_status(cluster, namespace, name) -> dict:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}


def worker_pods(cluster, namespace, job: str) -> list:
    items = cluster.core.list_namespaced_pod(namespace, label_selector=f"torchyard.dev/job-name={job}").items
    return sorted((p for p in items if p.metadata.deletion_timestamp is None), key=lambda p: p.metadata.name)


def test_pods_get_the_s3_locations_and_the_secret_by_reference(cluster, namespace, secret, operator, faults):
    job = create(cluster, namespace, trainingjob("s3job", {"uri": "s3://models/team-a", "secretName": secret}))
    run = f"s3job-{job['metadata']['uid'][:8]}"
    pods = wait_for(lambda: len(found := worker_pods(cluster, namespace, "s3job")) == 2 and found, "2 pods")
    for pod in pods:
        env = {e.name: e for e in pod.spec.containers[0].env}
        assert env[contract.CHECKPOINT_DIR].value == f"s3://models/team-a/checkpoints/{run}"
        assert env[contract.MODEL_DIR].value == f"s3://models/team-a/models/digits/{run}"
        for key in (*contract.S3_REQUIRED_KEYS, contract.S3_REGION):
            ref = env[key].value_from.secret_key_ref
            assert (env[key].value, ref.name, ref.key) == (None, secret, key)
        assert env[contract.S3_REGION].value_from.secret_key_ref.optional is True
        dumped = json.dumps(cluster.core.api_client.sanitize_for_serialization(pod))
        assert not [v for v in SECRET_VALUES.values() if v in dumped]

    faults.wait_running(namespace, "s3job-worker-0")
    uri = f"s3://models/team-a/models/digits/{run}"
    result = {"metrics": {"accuracy": 0.9}, "metric": "accuracy", "steps": 60,
              "artifact": {"path": uri, "sha256": "cd" * 32}}
    faults.terminate_container(namespace, "s3job-worker-1", exit_code=0)
    faults.terminate_container(namespace, "s3job-worker-0", exit_code=0, message=json.dumps(result))
    st = wait_for(lambda: (s := job_status(cluster, namespace, "s3job")).get("result", {}).get("modelVersion") and s,
                  "s3job registered", timeout=60)
    mv = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelversions",
                                                     st["result"]["modelVersion"])
    assert mv["spec"]["artifact"] == {"path": uri, "sha256": "cd" * 32}


@pytest.mark.parametrize("storage, field", [
    ({"uri": "s3://models/a"}, "spec.storage.secretName"),
    ({"uri": "s3://models/a", "secretName": "s3-creds", "claimName": "data"}, "spec.storage.uri"),
    ({"uri": "s3://Bad_Bucket/a", "secretName": "s3-creds"}, "spec.storage.uri"),
])
def test_an_ill_formed_storage_spec_is_refused_naming_the_field(cluster, namespace, storage, field):
    with pytest.raises(ApiException) as refused:
        create(cluster, namespace, trainingjob("bad-storage", storage))
    assert refused.value.status == 422
    causes = yaml.safe_load(refused.value.body)["details"]["causes"]
    assert [c["field"] for c in causes] == [field], causes
