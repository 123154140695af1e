"""2. The examples train in real pods as written (only the storage claim added): digits-ps and
digits-ddp reach their accuracy, report progress while running, and register a ModelVersion whose
digest is that of the files on the claim.
3. A user's own image and plain torchrun script (tests/e2e/user-image) trains through
template.command with nothing but the standard variables."""
from __future__ import annotations

import json

import pytest

from e2e_kit import (Resources, assert_succeeded, example, explain_job, figure, get, job_pods, job_status, pod_log,
                     run_client, wait, wait_job, wait_registered, with_claim)

# What each example says it reaches (digits-ddp: "about 0.97"), less a margin for another seed's luck.
ACCURACY = {"digits-ps.yaml": 0.93, "digits-ddp.yaml": 0.95}

# argv: the artifact directory. Hashes the files as docs/artifact.md defines the digest.
DIGEST = r'''
import hashlib, json, sys
from pathlib import Path
d = Path(sys.argv[1])
h = hashlib.sha256()
for name in ("model.pt", "state_dict.pt", "config.json"):
    h.update((d / name).read_bytes())
print(json.dumps({"sha256": h.hexdigest(), "files": sorted(p.name for p in d.iterdir()),
                  "metadata": json.loads((d / "metadata.json").read_text()).get("sha256")}))
'''


@pytest.fixture
def resources(installed):
    res = Resources(installed)
    yield res
    res.cleanup()


@pytest.mark.parametrize("file", ["digits-ps.yaml", "digits-ddp.yaml"])
def test_an_example_trains_in_real_pods_and_registers_its_model(installed, resources, file):
    job = example(file)
    name = job["metadata"]["name"]
    claim = resources.claim(f"{name}-data")
    resources.model(job["spec"].get("modelName", name))
    resources.create(with_claim(job, claim))
    seen_progress = []

    def finished():
        status = job_status(installed, name)
        if status.get("progress"):
            seen_progress.append(status["progress"])
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait(finished, f"TrainingJob {name} to finish", 600, interval=2, explain=lambda: explain_job(installed, name))
    assert_succeeded(installed, name, status)
    assert seen_progress, "no progress report reached the job's status while it ran"
    accuracy = status["result"]["metrics"]["accuracy"]
    figure(f"{file}: accuracy {accuracy}, {status['result'].get('steps')} steps")
    assert accuracy >= ACCURACY[file], f"{name} reached accuracy {accuracy}, below {ACCURACY[file]}: {status['result']}"

    version = wait_registered(installed, name)["result"]["modelVersion"]
    registered = get(installed, "ModelVersion", version)
    artifact = status["result"]["artifact"]
    assert registered["spec"]["artifact"]["sha256"] == artifact["sha256"]
    assert registered["spec"]["artifact"]["path"] == artifact["path"]
    on_disk = read_artifact_digest(installed, resources, claim, artifact["path"])
    assert on_disk["sha256"] == artifact["sha256"], f"the files on the claim hash otherwise: {on_disk}"
    assert on_disk["metadata"] == artifact["sha256"]


def read_artifact_digest(installed, resources, claim: str, path: str) -> dict:
    """Hash the artifact's files in a pod that mounts the claim where training pods do."""
    lines = run_client(installed, resources, "e2e-digest", DIGEST, path,
                       volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
                       volumeMounts=[{"name": "data", "mountPath": "/var/lib/torchyard", "readOnly": True}])
    assert lines, "the digest pod printed nothing"
    return lines[-1]


def test_a_users_own_image_and_torchrun_script_trains(installed, resources):
    job = example("custom-script.yaml")
    name = job["metadata"]["name"]
    job["spec"]["worker"]["template"]["image"] = installed.image("e2e-user")
    resources.create(job)
    status = wait_job(installed, name)
    assert_succeeded(installed, name, status)

    results = {}
    for pod in job_pods(installed, name):
        log = pod_log(installed, pod.metadata.name)
        found = [json.loads(line.split("E2E-RESULT ", 1)[1]) for line in log.splitlines() if "E2E-RESULT " in line]
        assert len(found) == 1, f"{pod.metadata.name} printed {len(found)} result lines:\n{log[-3000:]}"
        results[pod.metadata.name] = found[0]
    assert sorted(r["rank"] for r in results.values()) == [0, 1], results
    for pod, result in results.items():
        assert result["world_size"] == 2 and result["local_rank"] == 0, result
        assert result["allreduce"] == result["expected"] == 3, f"{pod}: the all_reduce summed to {result['allreduce']}"
        assert result["master_addr"].startswith(f"{name}-worker-0.{name}."), result["master_addr"]
        assert result["last_loss"] < result["first_loss"], f"{pod} did not learn: {result}"
    lead = next(r for r in results.values() if r["rank"] == 0)
    assert lead["saved"] and "model.pt" in lead["saved"], f"rank 0 wrote nothing into TORCHYARD_MODEL_DIR: {lead}"
