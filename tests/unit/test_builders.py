"""Builders against golden YAML, and the env contract value by value.

Regenerate the golden files after an intended change with
`UPDATE_GOLDEN=1 pytest tests/unit/test_builders.py` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from jobs import ALLREDUCE_CPU, ALLREDUCE_GPU, PARAMETER_SERVER, UID, job
from torchyard.builders.pods import build_pods, build_service
from torchyard.settings import Settings
from torchyard_spec import contract

GOLDEN = Path(__file__).parent / "golden"
SETTINGS = Settings(progress_url_base="http://torchyard.torchyard-system.svc:8080", progress_key=b"test-key")


def render(obj: dict) -> str:
    j = job(obj)
    return yaml.safe_dump_all([build_service(j)] + build_pods(j, attempt=0, settings=SETTINGS), sort_keys=False)


@pytest.mark.parametrize("name, obj", [
    ("allreduce-cpu", ALLREDUCE_CPU), ("allreduce-gpu", ALLREDUCE_GPU), ("parameter-server", PARAMETER_SERVER),
])
def test_manifests_match_golden(name, obj):
    path = GOLDEN / f"{name}.yaml"
    actual = render(obj)
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(actual)
    assert actual == path.read_text(), f"manifests for {name} changed; if intended, regenerate with UPDATE_GOLDEN=1"


def env_of(p: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in p["spec"]["containers"][0]["env"] if "value" in e}


def pods_by_name(obj: dict, attempt: int = 0) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in build_pods(job(obj), attempt=attempt, settings=SETTINGS)}


def test_allreduce_gpu_world_size_counts_processes_not_pods():
    pods = pods_by_name(ALLREDUCE_GPU)
    w0, w1 = env_of(pods["resnet-worker-0"]), env_of(pods["resnet-worker-1"])
    assert w0["WORLD_SIZE"] == w1["WORLD_SIZE"] == "8"
    assert (w0["RANK"], w1["RANK"]) == ("0", "4")
    assert w0["LOCAL_WORLD_SIZE"] == w0["PET_NPROC_PER_NODE"] == "4"
    assert (w0["PET_NODE_RANK"], w1["PET_NODE_RANK"]) == ("0", "1")
    assert w0["PET_NNODES"] == "2"
    assert w0["MASTER_ADDR"] == w1["MASTER_ADDR"] == "resnet-worker-0.resnet.ml.svc"
    assert w0["MASTER_PORT"] == w0["PET_MASTER_PORT"] == "23456"


def test_parameter_server_ranks_and_address_lists():
    pods = pods_by_name(PARAMETER_SERVER)
    assert set(pods) == {"ps-ps-0", "ps-ps-1", "ps-worker-0", "ps-worker-1", "ps-worker-2"}
    ranks = {name: env_of(p)["RANK"] for name, p in pods.items()}
    assert ranks == {"ps-ps-0": "0", "ps-ps-1": "1", "ps-worker-0": "2", "ps-worker-1": "3", "ps-worker-2": "4"}
    env = env_of(pods["ps-worker-1"])
    assert env["WORLD_SIZE"] == "5"
    assert env["MASTER_ADDR"] == "ps-ps-0.ps.ml.svc"
    assert env["TORCHYARD_ROLE"] == "worker" and env["TORCHYARD_ROLE_INDEX"] == "1"
    assert env["TORCHYARD_PARAMETER_SERVER_ADDRESSES"] == "ps-ps-0.ps.ml.svc:23456,ps-ps-1.ps.ml.svc:23456"
    assert env["TORCHYARD_WORKER_ADDRESSES"].split(",") == [f"ps-worker-{i}.ps.ml.svc:23456" for i in range(3)]
    assert env["TORCHYARD_NUM_PARAMETER_SERVERS"] == "2" and env["TORCHYARD_NUM_WORKERS"] == "3"
    assert env["TORCHYARD_MODEL_NAME"] == "digits-classifier"
    assert env["TORCHYARD_MODEL_DIR"] == f"/var/lib/torchyard/models/digits-classifier/ps-{UID[:8]}"
    assert env["TORCHYARD_CHECKPOINT_DIR"] == f"/var/lib/torchyard/checkpoints/ps-{UID[:8]}"
    assert env_of(pods["ps-ps-1"])["TORCHYARD_ROLE"] == "ps"


def test_env_reads_back_through_the_contract():
    p = pods_by_name(PARAMETER_SERVER, attempt=3)["ps-worker-2"]
    parsed = contract.PodEnv.from_environ(env_of(p))
    assert (parsed.rank, parsed.world_size, parsed.role, parsed.role_index) == (4, 5, "worker", 2)
    assert parsed.attempt == 3
    assert parsed.trainer_config == {"parameterServer": {"mode": "Async", "maxStaleness": 2}}
    assert parsed.progress_url == "http://torchyard.torchyard-system.svc:8080/v1/progress/ml/ps"
    assert len(parsed.progress_token) == 64


def test_gpu_pods_get_gpu_limits_node_selector_and_toleration():
    p = pods_by_name(ALLREDUCE_GPU)["resnet-worker-0"]
    container = p["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["resources"]["requests"] == {"cpu": "8", "memory": "32Gi"}
    assert p["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in p["spec"]["tolerations"]


def test_cpu_pods_get_no_gpu_placement():
    p = pods_by_name(ALLREDUCE_CPU)["digits-worker-0"]
    assert "nodeSelector" not in p["spec"] and "tolerations" not in p["spec"]
    assert "nvidia.com/gpu" not in p["spec"]["containers"][0]["resources"].get("limits", {})


def test_role_placement_overrides_the_gpu_defaults():
    obj = {**ALLREDUCE_GPU, "spec": {**ALLREDUCE_GPU["spec"], "worker": {
        "replicas": 1, "gpus": 1, "nodeSelector": {"pool": "a100"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]}}}
    p = pods_by_name(obj)["resnet-worker-0"]
    assert p["spec"]["nodeSelector"] == {"pool": "a100"}
    assert p["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]


def test_pods_meet_the_restricted_pod_security_level():
    for p in build_pods(job(ALLREDUCE_GPU), 0, SETTINGS) + build_pods(job(PARAMETER_SERVER), 0, SETTINGS):
        pod_sc = p["spec"]["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in p["spec"]["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
        assert not any("hostPath" in v for v in p["spec"]["volumes"])
        assert p["spec"]["automountServiceAccountToken"] is False


def test_pods_have_stable_identity_labels_and_owner():
    p = pods_by_name(PARAMETER_SERVER, attempt=2)["ps-ps-1"]
    assert p["spec"]["hostname"] == "ps-ps-1" and p["spec"]["subdomain"] == "ps"
    assert p["metadata"]["labels"]["torchyard.dev/job-name"] == "ps"
    assert p["metadata"]["labels"]["torchyard.dev/role"] == "ps"
    assert p["metadata"]["labels"]["torchyard.dev/index"] == "1"
    assert p["metadata"]["labels"]["torchyard.dev/attempt"] == "2"
    owner = p["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("TrainingJob", UID, True)


def test_service_is_headless_and_publishes_not_ready_addresses():
    svc = build_service(job(PARAMETER_SERVER))
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"torchyard.dev/job-name": "ps"}


def test_custom_command_and_image_replace_the_bundled_trainer():
    obj = {**ALLREDUCE_CPU, "spec": {"strategy": "AllReduce", "worker": {"replicas": 2, "template": {
        "image": "example.org/me/train:1", "command": ["torchrun", "train.py"], "args": ["--lr", "0.1"],
        "env": [{"name": "MY_FLAG", "value": "1"}]}}}}
    c = pods_by_name(obj)["digits-worker-0"]["spec"]["containers"][0]
    assert c["image"] == "example.org/me/train:1"
    assert c["command"] == ["torchrun", "train.py"] and c["args"] == ["--lr", "0.1"]
    assert env_of(pods_by_name(obj)["digits-worker-0"])["MY_FLAG"] == "1"
