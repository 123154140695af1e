"""`torchyard convert`: PyTorchJob manifests (tests/unit/pytorchjob/*.yaml) as TrainingJobs, field
by field, and an error naming the field for what has no equivalent."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_crd_schema import SCHEMA, validate
from torchyard.api.errors import SpecError
from torchyard.api.trainingjob import parse_training_job
from torchyard.convert import convert, convert_documents

HERE = Path(__file__).parent / "pytorchjob"
FILES = sorted(HERE.glob("*.yaml"))


def load(name: str) -> dict:
    """The file's first document."""
    return next(yaml.safe_load_all((HERE / name).read_text()))


def converted(name: str):
    return convert(load(name))


def spec_of(name: str) -> dict:
    return converted(name).job["spec"]


def notes_about(name: str, path: str) -> list[str]:
    return [n for n in converted(name).notes if n.startswith(path + ":")]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_conversion_is_a_valid_trainingjob(path):
    for _, _, outcome in convert_documents(path.read_text()):
        if outcome is None:
            continue
        assert not isinstance(outcome, Exception), outcome
        assert validate(SCHEMA["properties"]["spec"], outcome.job["spec"], "spec") == []
        job = dict(outcome.job, metadata={**outcome.job["metadata"], "uid": "u"})
        assert parse_training_job(job).spec.worker.replicas >= 1


def test_master_and_workers_become_one_worker_role_master_first():
    worker = spec_of("master-worker-gpu.yaml")["worker"]
    assert worker["replicas"] == 4  # Master (rank 0, the rendezvous) + 3 Workers
    assert spec_of("master-worker-gpu.yaml")["strategy"] == "AllReduce"


def test_master_alone_and_workers_alone_keep_their_count():
    first, second = [o.job for _, _, o in convert_documents((HERE / "two-jobs.yaml").read_text()) if o]
    assert first["spec"]["worker"]["replicas"] == 1 and second["spec"]["worker"]["replicas"] == 4


def test_container_image_command_args_and_env():
    template = spec_of("master-worker-gpu.yaml")["worker"]["template"]
    assert template["image"] == "team/resnet:1.4"
    assert template["command"] == ["torchrun", "train.py"] and template["args"] == ["--epochs", "90"]
    assert template["env"] == [{"name": "NCCL_DEBUG", "value": "INFO"}]


def test_gpu_limit_becomes_gpus_and_other_resources_stay():
    worker = spec_of("master-worker-gpu.yaml")["worker"]
    assert worker["gpus"] == 4
    assert worker["resources"] == {"limits": {"memory": "64Gi"}, "requests": {"cpu": "16"}}


def test_placement_node_selector_tolerations_affinity():
    worker = spec_of("master-worker-gpu.yaml")["worker"]
    assert worker["nodeSelector"] == {"cloud.example/accelerator": "a100"}
    assert worker["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "podAntiAffinity" in spec_of("workers-cpu-nproc.yaml")["worker"]["affinity"]


def test_job_metadata_labels_annotations_and_namespace():
    assert converted("master-worker-gpu.yaml").job["metadata"] == {
        "name": "resnet-ddp", "labels": {"team": "vision"}, "annotations": {"owner": "ml-platform"}}
    assert converted("workers-cpu-nproc.yaml").job["metadata"]["namespace"] == "research"


def test_pod_labels_annotations_pull_secrets_and_service_account():
    template = spec_of("workers-cpu-nproc.yaml")["worker"]["template"]
    assert template["metadata"]["labels"] == {"team": "nlp", "sidecar.istio.io/inject": "false"}
    assert template["metadata"]["annotations"] == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
    assert template["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert template["serviceAccountName"] == "trainer"


def test_no_command_keeps_the_images_entrypoint():
    template = spec_of("workers-cpu-nproc.yaml")["worker"]["template"]
    assert "command" not in template and template["args"] == ["--config", "/config/train.yaml"]


def test_volumes_pass_and_the_dev_shm_empty_dir_is_the_operators_own():
    template = spec_of("workers-cpu-nproc.yaml")["worker"]["template"]
    assert [v["name"] for v in template["volumes"]] == ["data", "config"]
    assert [m["mountPath"] for m in template["volumeMounts"]] == ["/data", "/config"]
    assert notes_about("workers-cpu-nproc.yaml", "spec.pytorchReplicaSpecs.Worker.template.spec.volumes[2]")


def test_an_unmounted_dshm_empty_dir_is_dropped_too():
    obj = load("two-jobs.yaml")
    obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["volumes"] = [{"name": "dshm", "emptyDir": {}}]
    assert "volumes" not in convert(obj).job["spec"]["worker"]["template"]


def test_nproc_per_node_on_cpu_and_a_note_on_world_size():
    assert spec_of("workers-cpu-nproc.yaml")["worker"]["nprocPerNode"] == 2
    assert "WORLD_SIZE" in notes_about("workers-cpu-nproc.yaml", "spec.nprocPerNode")[0]


def test_nproc_per_node_equal_to_the_gpus_is_the_default_and_is_not_written():
    assert "nprocPerNode" not in spec_of("elastic-fixed.yaml")["worker"]  # nProcPerNode 2 with 2 GPUs


@pytest.mark.parametrize("value, expected", [("auto", None), ("gpu", None), (3, 3), ("1", 1)])
def test_nproc_per_node_values(value, expected):
    obj = load("two-jobs.yaml")
    obj["spec"]["nprocPerNode"] = value
    assert convert(obj).job["spec"]["worker"].get("nprocPerNode") == expected


def test_run_policy_fields_map_one_to_one():
    assert spec_of("master-worker-gpu.yaml")["runPolicy"] == {
        "backoffLimit": 5, "activeDeadlineSeconds": 7200, "ttlSecondsAfterFinished": 600,
        "cleanPodPolicy": "All", "restartPolicy": "ExitCode"}


def test_unset_clean_pod_policy_keeps_pytorchjobs_default_with_a_note():
    assert spec_of("queued-suspended.yaml")["runPolicy"]["cleanPodPolicy"] == "None"
    assert "default is None" in notes_about("queued-suspended.yaml", "spec.runPolicy.cleanPodPolicy")[0]
    assert not notes_about("master-worker-gpu.yaml", "spec.runPolicy.cleanPodPolicy")


def test_unset_backoff_limit_notes_the_differing_default():
    assert "backoffLimit" not in spec_of("queued-suspended.yaml")["runPolicy"]
    assert "without a limit" in notes_about("queued-suspended.yaml", "spec.runPolicy.backoffLimit")[0]


def test_restart_policy_from_the_replica_specs_and_the_gang_restart_note():
    assert spec_of("queued-suspended.yaml")["runPolicy"]["restartPolicy"] == "Never"
    assert spec_of("elastic-fixed.yaml")["runPolicy"]["restartPolicy"] == "OnFailure"  # PyTorchJob's default
    assert "restartScope" in notes_about("master-worker-gpu.yaml", "spec.runPolicy.restartPolicy")[0]
    assert not notes_about("queued-suspended.yaml", "spec.runPolicy.restartPolicy")


def test_restart_policy_always_becomes_on_failure_with_a_note():
    obj = load("two-jobs.yaml")
    obj["spec"]["pytorchReplicaSpecs"]["Master"]["restartPolicy"] = "Always"
    out = convert(obj)
    assert out.job["spec"]["runPolicy"]["restartPolicy"] == "OnFailure"
    assert any(n.startswith("spec.pytorchReplicaSpecs.Master.restartPolicy:") for n in out.notes)


@pytest.mark.parametrize("value, expected", [("kueue.x-k8s.io/multikueue", "kueue.x-k8s.io/multikueue"),
                                             ("kubeflow.org/training-operator", None)])
def test_managed_by_passes_except_the_training_operators_own(value, expected):
    obj = load("two-jobs.yaml")
    obj["spec"]["runPolicy"] = {"managedBy": value}
    assert convert(obj).job["spec"]["runPolicy"].get("managedBy") == expected


def test_suspend_queue_and_priority_class():
    out = converted("queued-suspended.yaml")
    assert out.job["spec"]["runPolicy"]["suspend"] is True
    assert out.job["spec"]["runPolicy"]["managedBy"] == "kueue.x-k8s.io/multikueue"
    assert out.job["metadata"]["labels"] == {"kueue.x-k8s.io/queue-name": "team-a"}
    assert out.job["spec"]["worker"]["template"]["priorityClassName"] == "high-priority"


@pytest.mark.parametrize("min_available, whole", [(3, False), (2, True)])
def test_a_gang_request_becomes_gang_mode_whose_gang_is_the_whole_job(min_available, whole):
    obj = load("queued-suspended.yaml")
    obj["spec"]["runPolicy"]["schedulingPolicy"]["minAvailable"] = min_available
    out = convert(obj)
    assert out.job["spec"]["runPolicy"]["gangScheduling"] is True
    note = [n for n in out.notes if n.startswith("spec.runPolicy.schedulingPolicy.minAvailable:")][0]
    assert ("every pod of the job (3)" in note) is whole


def test_fixed_size_elastic_policy_maps_its_retries_and_drops_its_rendezvous():
    spec = spec_of("elastic-fixed.yaml")
    assert spec["runPolicy"]["backoffLimit"] == 10
    assert notes_about("elastic-fixed.yaml", "spec.elasticPolicy.rdzvBackend")
    assert not notes_about("elastic-fixed.yaml", "spec.runPolicy.backoffLimit")


def test_security_context_of_pod_and_container_merge_and_fs_group_is_dropped():
    spec = spec_of("root-image.yaml")
    assert spec["worker"]["template"]["securityContext"] == {
        "runAsUser": 0, "runAsNonRoot": False, "readOnlyRootFilesystem": False}
    assert notes_about("root-image.yaml", "spec.pytorchReplicaSpecs.Master.template.spec.securityContext.fsGroup")
    assert "allowSecurityContextOverrides" in notes_about("root-image.yaml", "spec.worker.template.securityContext")[0]


def test_dropped_container_fields_are_noted_once_for_master_and_worker():
    notes = converted("master-worker-gpu.yaml").notes
    assert sum(".ports:" in n for n in notes) == 1 and sum(".imagePullPolicy:" in n for n in notes) == 1


def broken(change) -> dict:
    obj = copy.deepcopy(load("master-worker-gpu.yaml"))
    change(obj["spec"], obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"])
    return obj


def _elastic(spec, _):
    spec["elasticPolicy"] = {"minReplicas": 1, "maxReplicas": 8}


def _metrics(spec, _):
    spec["elasticPolicy"] = {"metrics": [{"type": "Resource"}]}


ERRORS = [  # what is changed, the field the error names, words of its message
    (lambda s, p: p["containers"].append({"name": "sidecar", "image": "envoy"}),
     "spec.pytorchReplicaSpecs.Master.template.spec.containers[1]", "sidecar"),
    (lambda s, p: p["containers"][0].update(image="team/other:1"), "spec.pytorchReplicaSpecs.Master", "template.image"),
    (lambda s, p: s["pytorchReplicaSpecs"]["Master"].update(restartPolicy="Never"),
     "spec.pytorchReplicaSpecs.Master.restartPolicy", "one restartPolicy"),
    (lambda s, p: s["pytorchReplicaSpecs"]["Master"].update(replicas=2), "spec.pytorchReplicaSpecs.Master.replicas", "one Master"),
    (lambda s, p: s["pytorchReplicaSpecs"].update(Launcher={}), "spec.pytorchReplicaSpecs.Launcher", "no equivalent"),
    (lambda s, p: p["containers"][0].update(workingDir="/app"),
     "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].workingDir", "no equivalent"),
    (lambda s, p: p["containers"][0].update(envFrom=[{"configMapRef": {"name": "c"}}]),
     "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].envFrom", "no equivalent"),
    (lambda s, p: p["containers"][0].update(securityContext={"privileged": True}),
     "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].securityContext.privileged", "no equivalent"),
    (lambda s, p: p.update(initContainers=[{"name": "init"}]),
     "spec.pytorchReplicaSpecs.Master.template.spec.initContainers", "no equivalent"),
    (lambda s, p: p.update(hostNetwork=True), "spec.pytorchReplicaSpecs.Master.template.spec.hostNetwork", "no equivalent"),
    (lambda s, p: p.update(volumes=[{"name": "tmp", "emptyDir": {}}]),
     "spec.pytorchReplicaSpecs.Master.template.spec.volumes[0].name", "operator's own"),
    (lambda s, p: p["containers"][0]["resources"]["limits"].update({"nvidia.com/gpu": "half"}),
     "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].resources.limits.nvidia.com/gpu", "whole number"),
    (_elastic, "spec.elasticPolicy.minReplicas", "fixed number of pods (4)"),
    (_metrics, "spec.elasticPolicy.metrics", "autoscale"),
    (lambda s, p: s.update(nprocPerNode="cpu"), "spec.nprocPerNode", "no equivalent"),
    (lambda s, p: s["runPolicy"].update(schedulingPolicy={"queue": "a", "minResources": {}, "gang": 1}),
     "spec.runPolicy.schedulingPolicy.gang", "no equivalent"),
    (lambda s, p: s.update(runPolicy=[]), "spec.runPolicy", "must be an object"),
    (lambda s, p: s.pop("pytorchReplicaSpecs"), "spec.pytorchReplicaSpecs", "is required"),
]


@pytest.mark.parametrize("change, field, words", ERRORS, ids=[e[1].rsplit(".", 1)[-1] + f"-{i}" for i, e in enumerate(ERRORS)])
def test_what_has_no_equivalent_is_an_error_naming_the_field(change, field, words):
    with pytest.raises(SpecError) as caught:
        convert(broken(change))
    assert caught.value.field == field and words in str(caught.value)


@pytest.mark.parametrize("where, key", [("labels", "torchyard.dev/role"), ("annotations", "kueue.x-k8s.io/x")])
def test_reserved_pod_metadata_is_an_error(where, key):
    obj = load("workers-cpu-nproc.yaml")
    obj["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["metadata"][where][key] = "v"
    with pytest.raises(SpecError) as caught:
        convert(obj)
    assert caught.value.field == f"spec.pytorchReplicaSpecs.Worker.template.metadata.{where}"


@pytest.mark.parametrize("obj, field", [
    ({"apiVersion": "kubeflow.org/v2", "kind": "PyTorchJob"}, "apiVersion"),
    ({**load("two-jobs.yaml"), "metadata": {"name": "n" * 46}}, "metadata.name"),
])
def test_wrong_version_and_long_names_are_refused(obj, field):
    with pytest.raises(SpecError) as caught:
        convert(obj)
    assert caught.value.field == field


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torchyard.cli", "convert", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_cli_prints_every_job_with_its_notes_and_warns_on_stderr():
    done = run_cli(str(HERE / "two-jobs.yaml"))
    assert done.returncode == 0, done.stderr
    docs = list(yaml.safe_load_all(done.stdout))
    assert [d["metadata"]["name"] for d in docs] == ["first", "second"]
    assert "# NOTE: spec.runPolicy.cleanPodPolicy:" in done.stdout
    assert "document 1 (settings) is not a PyTorchJob; left out" in done.stderr
    assert "warning:" in done.stderr and "spec.runPolicy.cleanPodPolicy" in done.stderr


def test_cli_reads_stdin_and_fails_naming_the_field():
    obj = load("two-jobs.yaml")
    obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["workingDir"] = "/app"
    done = run_cli("-", stdin=yaml.safe_dump(obj))
    assert done.returncode == 1
    assert "error: -: document 0 (first): spec.pytorchReplicaSpecs.Master.template.spec.containers[0].workingDir" in done.stderr
    assert done.stdout == ""
