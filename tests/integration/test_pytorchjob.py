"""Coming from PyTorchJob, against a real API server: every `torchyard convert` result is stored as
written, and the pods of a job carry what PyTorchJob users rely on (pod labels and annotations,
pull secrets, the image's own entrypoint, several processes per CPU pod, and root where the
operator's administrator allows it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.waits import wait_for
from test_examples import _contains
from torchyard.convert import convert_documents

GROUP, VERSION, PLURAL = "torchyard.dev", "v1alpha1", "trainingjobs"
EXAMPLES = Path(__file__).resolve().parents[1] / "unit" / "pytorchjob"
CONVERTED = [(path.name, outcome) for path in sorted(EXAMPLES.glob("*.yaml"))
             for _, _, outcome in convert_documents(path.read_text()) if outcome is not None]
ALLOW = "TORCHYARD_ALLOW_SECURITY_CONTEXT_OVERRIDES"


def create(cluster, namespace: str, body: dict) -> dict:
    return cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def read(cluster, namespace: str, name: str) -> dict:
    return cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


@pytest.mark.parametrize("source, converted", CONVERTED, ids=[f"{s}-{c.job['metadata']['name']}" for s, c in CONVERTED])
def test_a_converted_pytorchjob_is_stored_as_written(cluster, crds, namespace, source, converted):
    body = {**converted.job, "metadata": {**converted.job["metadata"], "namespace": namespace}}
    create(cluster, namespace, body)
    stored = read(cluster, namespace, body["metadata"]["name"])
    assert _contains(stored["spec"], body["spec"]), f"the server pruned or changed a field converted from {source}"
    assert _contains(stored["metadata"], {k: v for k, v in body["metadata"].items() if k in ("labels", "annotations")})


def job(name: str, **worker) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"worker": {"replicas": 2, **worker}}}


def pods_of(cluster, namespace: str, name: str, count: int) -> dict:
    def found():
        items = cluster.core.list_namespaced_pod(namespace, label_selector=f"torchyard.dev/job-name={name}").items
        return {p.metadata.name: p for p in items} if len(items) == count else None

    return wait_for(found, f"{count} pods of {name}", timeout=60)


def env_of(pod) -> dict[str, str]:
    return {e.name: e.value for e in pod.spec.containers[0].env if e.value is not None}


def test_pods_carry_labels_annotations_pull_secrets_the_entrypoint_and_processes(cluster, crds, namespace, operator):
    template = {"image": "team/bert:2", "args": ["--config", "/c.yaml"], "imagePullSecrets": [{"name": "registry"}],
                "metadata": {"labels": {"team": "nlp"}, "annotations": {"cost-center": "42"}}}
    create(cluster, namespace, job("ported", nprocPerNode=2, template=template))
    pods = pods_of(cluster, namespace, "ported", 2)
    for pod in pods.values():
        assert pod.metadata.labels["team"] == "nlp" and pod.metadata.labels["torchyard.dev/job-name"] == "ported"
        assert pod.metadata.annotations["cost-center"] == "42"
        assert [s.name for s in pod.spec.image_pull_secrets] == ["registry"]
        container = pod.spec.containers[0]
        assert container.image == "team/bert:2" and container.command is None and container.args == ["--config", "/c.yaml"]
    env0, env1 = env_of(pods["ported-worker-0"]), env_of(pods["ported-worker-1"])
    assert (env0["WORLD_SIZE"], env0["RANK"], env1["RANK"], env1["LOCAL_WORLD_SIZE"]) == ("4", "0", "2", "2")
    assert env1["MASTER_ADDR"] == f"ported-worker-0.ported.{namespace}.svc"


def security_override(name: str) -> dict:
    return job(name, replicas=1, template={"securityContext": {"runAsUser": 0, "runAsNonRoot": False,
                                                               "readOnlyRootFilesystem": False}})


def test_root_and_a_writable_root_filesystem_where_the_administrator_allows_it(
        cluster, crds, namespace, operator_factory, monkeypatch):
    monkeypatch.setenv(ALLOW, "true")
    operator_factory(namespace)
    create(cluster, namespace, security_override("legacy"))
    context = pods_of(cluster, namespace, "legacy", 1)["legacy-worker-0"].spec.containers[0].security_context
    assert (context.run_as_user, context.run_as_non_root, context.read_only_root_filesystem) == (0, False, False)
    assert context.allow_privilege_escalation is False and context.capabilities.drop == ["ALL"]


def test_a_security_override_the_operator_does_not_allow_fails_the_job_naming_field_and_setting(
        cluster, crds, namespace, operator_factory, monkeypatch):
    monkeypatch.delenv(ALLOW, raising=False)
    operator_factory(namespace)
    create(cluster, namespace, security_override("refused"))
    status = wait_for(lambda: (read(cluster, namespace, "refused").get("status") or {}).get("phase") == "Failed"
                      and read(cluster, namespace, "refused")["status"], "the job to fail", timeout=60)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.worker.template.securityContext" in failed["message"] and ALLOW in failed["message"]
    assert not cluster.core.list_namespaced_pod(namespace, label_selector="torchyard.dev/job-name=refused").items
