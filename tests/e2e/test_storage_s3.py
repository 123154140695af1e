"""Training to S3-compatible storage and serving from it, on real containers.

A real S3 server (versitygw, built from its Go module like the control plane) listens on the real
node's address, where pods reach it. The examples' first training job, with `spec.storage` turned
into an s3:// URI and a Secret, writes its checkpoints and artifact there; the ModelVersion it
registers records the URI and the digest; a ModelDeployment with the same Secret loads the artifact
from there, checks the digest, and answers known digits through its Service.
"""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from e2e_kit import (PREDICT, ROOT, Resources, assert_succeeded, example, get, run_client, wait_job, wait_registered,
                     wait_serving)

NODE_ADDRESS = "10.245.0.1"  # the real node's bridge (hack/localcluster/host.py): pods reach the host here
MODEL = "digits-s3"
SECRET = "digits-s3-store"
PREFIX = "e2e"


def s3server():
    """tests/trainer/s3server.py, the trainer tier's harness of the same server."""
    spec = importlib.util.spec_from_file_location("s3server", ROOT / "tests" / "trainer" / "s3server.py")
    module = sys.modules.setdefault("s3server", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def store(installed, tmp_path_factory):
    if installed.runtime != "local":
        pytest.skip("the S3 server runs on this host, where only the local real node's pods reach it")
    harness = s3server()
    server = harness.S3Server(tmp_path_factory.mktemp("s3"), host=NODE_ADDRESS)
    try:
        yield server, harness.BUCKET
    finally:
        server.stop()


def secret(server) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}, "stringData": server.environ}


def job() -> dict:
    obj = example("serving-2-train.yaml")
    obj["metadata"]["name"] = "digits-s3-1"
    obj["spec"]["modelName"] = MODEL
    obj["spec"]["storage"] = {"uri": f"s3://models/{PREFIX}", "secretName": SECRET}
    return obj


def deployment() -> dict:
    obj = example("serving-1-deployment.yaml", "ModelDeployment")
    obj["metadata"]["name"] = MODEL
    obj["spec"].update(modelName=MODEL, replicas=1, standby=0, storage={"secretName": SECRET})
    return obj


def test_a_job_trains_to_s3_and_a_deployment_serves_from_there(installed, store):
    server, bucket = store
    res = Resources(installed)
    res.model(MODEL)
    try:
        res.create(secret(server))
        res.create(job())
        status = wait_job(installed, "digits-s3-1")
        assert_succeeded(installed, "digits-s3-1", status)
        status = wait_registered(installed, "digits-s3-1")
        artifact = get(installed, "ModelVersion", status["result"]["modelVersion"])["spec"]["artifact"]
        assert artifact["path"].startswith(f"s3://{bucket}/{PREFIX}/models/{MODEL}/digits-s3-1-"), artifact
        assert "claimName" not in artifact
        key = artifact["path"][len(f"s3://{bucket}/"):]
        assert json.loads(server.store.get(bucket, f"{key}/metadata.json"))["sha256"] == artifact["sha256"]
        checkpoints = server.store.list(bucket, f"{PREFIX}/checkpoints/")
        assert any(k.endswith(".manifest.json") for k in checkpoints), checkpoints

        res.create(deployment())
        version = get(installed, "ModelVersion", status["result"]["modelVersion"])["spec"]["version"]
        wait_serving(installed, MODEL, MODEL, version)
        url = f"http://{MODEL}.{installed.namespace}.svc/v2/models/{MODEL}/infer"
        lines = run_client(installed, res, "e2e-s3-predict", PREDICT, url, "100")
        batch = next(line for line in lines if line["kind"] == "batch")
        correct = sum(p == e for p, e in zip(batch["predicted"], batch["expected"]))
        assert correct >= 90, f"only {correct} of 100 known digits predicted right: {batch}"
        metadata = next(line for line in lines if line["kind"] == "metadata")
        assert metadata["sha256"] == artifact["sha256"], metadata
    finally:
        res.cleanup()

