"""What a role may add to or relax in its pods: labels and annotations, pull secrets, the image's
own entrypoint, several processes per CPU pod, and security overrides an administrator allowed."""

from __future__ import annotations

import copy

import pytest

from jobs import ALLREDUCE_CPU, PARAMETER_SERVER, job
from torchyard.api.errors import SpecError
from torchyard.builders.pods import build_pods
from torchyard.builders.security import check_overrides
from torchyard.settings import Settings

SETTINGS = Settings(progress_key=b"test-key")
ALLOWING = Settings(progress_key=b"test-key", allow_security_context_overrides=True)


def with_worker(base: dict = ALLREDUCE_CPU, **worker) -> dict:
    obj = copy.deepcopy(base)
    obj["spec"]["worker"].update(worker)
    return obj


def pods(obj: dict, settings: Settings = SETTINGS) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in build_pods(job(obj), attempt=0, settings=settings)}


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"] if "value" in e}


def test_role_labels_and_annotations_reach_every_pod_beside_the_identity_labels():
    meta = {"labels": {"team": "vision", "sidecar.istio.io/inject": "false"}, "annotations": {"cost-center": "42"}}
    for pod in pods(with_worker(template={"metadata": meta})).values():
        assert pod["metadata"]["labels"]["team"] == "vision"
        assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
        assert pod["metadata"]["labels"]["torchyard.dev/job-name"] == "digits"
        assert pod["metadata"]["annotations"] == {"cost-center": "42"}


def test_pods_without_role_metadata_have_no_annotations():
    assert all("annotations" not in p["metadata"] for p in pods(ALLREDUCE_CPU).values())


@pytest.mark.parametrize("where, key", [
    ("labels", "torchyard.dev/role"), ("labels", "kueue.x-k8s.io/queue-name"), ("labels", "app.kubernetes.io/managed-by"),
    ("annotations", "torchyard.dev/anything"), ("annotations", "kueue.x-k8s.io/workload"),
])
def test_reserved_label_and_annotation_keys_are_refused_naming_the_field(where, key):
    with pytest.raises(SpecError) as caught:
        job(with_worker(template={"metadata": {where: {key: "x"}}}))
    assert caught.value.field == f"spec.worker.template.metadata.{where}" and key in str(caught.value)


def test_image_pull_secrets_reach_the_pod_spec():
    pod = pods(with_worker(template={"imagePullSecrets": [{"name": "registry-a"}, {"name": "registry-b"}]}))["digits-worker-0"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-a"}, {"name": "registry-b"}]
    assert "imagePullSecrets" not in pods(ALLREDUCE_CPU)["digits-worker-0"]["spec"]


def test_own_image_without_command_runs_its_entrypoint_and_still_gets_the_contract():
    obj = with_worker(template={"image": "team/train:1", "args": ["--epochs", "3"]})
    container = pods(obj)["digits-worker-1"]["spec"]["containers"][0]
    assert container["image"] == "team/train:1"
    assert "command" not in container and container["args"] == ["--epochs", "3"]
    env = env_of(pods(obj)["digits-worker-1"])
    assert (env["RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"]) == ("1", "2", "digits-worker-0.digits.ml.svc")


def test_torchyard_run_refuses_an_image_entrypoint_it_cannot_start_naming_the_field():
    from torchyard.local import local_problem

    assert "spec.worker.template.command" in local_problem(job(with_worker(template={"image": "team/train:1"})))
    assert local_problem(job(with_worker(template={"image": "team/train:1", "command": ["python", "t.py"]}))) == ""


def test_the_bundled_trainer_keeps_its_command():
    container = pods(ALLREDUCE_CPU)["digits-worker-0"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "torchyard_trainer"]


def test_nproc_per_node_runs_several_processes_in_a_cpu_pod():
    found = pods(with_worker(replicas=3, nprocPerNode=2))
    envs = [env_of(found[f"digits-worker-{i}"]) for i in range(3)]
    assert [e["RANK"] for e in envs] == ["0", "2", "4"]
    assert {e["WORLD_SIZE"] for e in envs} == {"6"}
    assert {(e["LOCAL_WORLD_SIZE"], e["PET_NPROC_PER_NODE"], e["PET_NNODES"]) for e in envs} == {("2", "2", "3")}
    assert [e["PET_NODE_RANK"] for e in envs] == ["0", "1", "2"]
    assert "nvidia.com/gpu" not in found["digits-worker-0"]["spec"]["containers"][0]["resources"].get("limits", {})


def test_nproc_per_node_of_workers_shifts_no_parameter_server_rank():
    obj = copy.deepcopy(PARAMETER_SERVER)
    obj["spec"]["worker"]["nprocPerNode"] = 2
    found = pods(obj)
    ps_count = obj["spec"]["parameterServer"]["replicas"]
    ranks = {name: env_of(p)["RANK"] for name, p in found.items()}
    assert ranks["ps-worker-0"] == str(ps_count) and ranks["ps-worker-1"] == str(ps_count + 2)
    assert env_of(found["ps-ps-0"])["LOCAL_WORLD_SIZE"] == "1"


def test_security_defaults_stay_restricted_without_an_override():
    sc = pods(ALLREDUCE_CPU)["digits-worker-0"]["spec"]["containers"][0]["securityContext"]
    assert (sc["runAsNonRoot"], sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"]) == (True, True, False)


def test_an_allowed_override_runs_as_root_with_a_writable_root_filesystem():
    obj = with_worker(template={"securityContext": {"runAsUser": 0, "runAsNonRoot": False, "readOnlyRootFilesystem": False}})
    check_overrides(job(obj), ALLOWING)
    pod = pods(obj, ALLOWING)["digits-worker-0"]
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert (sc["runAsUser"], sc["runAsNonRoot"], sc["readOnlyRootFilesystem"]) == (0, False, False)
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("role", ["worker", "parameterServer"])
def test_an_override_the_operator_does_not_allow_names_the_field_and_the_setting(role):
    obj = copy.deepcopy(PARAMETER_SERVER)
    obj["spec"][role]["template"] = {"securityContext": {"readOnlyRootFilesystem": False}}
    with pytest.raises(SpecError) as caught:
        check_overrides(job(obj), SETTINGS)
    assert caught.value.field == f"spec.{role}.template.securityContext"
    assert "TORCHYARD_ALLOW_SECURITY_CONTEXT_OVERRIDES" in str(caught.value)


def test_the_setting_is_read_from_the_environment_and_off_by_default():
    assert Settings.from_environ({}).allow_security_context_overrides is False
    assert Settings.from_environ({"TORCHYARD_ALLOW_SECURITY_CONTEXT_OVERRIDES": "true"}).allow_security_context_overrides
    assert not Settings.from_environ({"TORCHYARD_ALLOW_SECURITY_CONTEXT_OVERRIDES": "no"}).allow_security_context_overrides
