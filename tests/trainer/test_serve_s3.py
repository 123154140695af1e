"""Artifacts in S3-compatible storage, against a real S3 server (versitygw) on 127.0.0.1."""

from __future__ import annotations

import datetime
import json

import pytest
import torch

from s3server import BUCKET, s3  # noqa: F401  (s3: the fixture)
from test_serve import FEATURES, NAME, Server, infer_body, save, trained_model
from torchyard_trainer import objstore
from torchyard_trainer.artifact import METADATA_FILE, verify_artifact
from torchyard_trainer.objstore import Location, NotFound, ObjectStore, ObjectStoreError, upload_directory
from torchyard_trainer.serve_source import ObjectSource

pytestmark = pytest.mark.trainer

PREFIX = f"{NAME}/run-1"
URI = f"s3://{BUCKET}/{PREFIX}"


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return trained_model()


def test_signatures_match_the_published_aws_examples():
    # AWS's Signature Version 4 examples for S3 (GET Bucket lifecycle and list objects).
    now = datetime.datetime(2013, 5, 24, tzinfo=datetime.timezone.utc)
    expected = {"lifecycle": "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
                "list": "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"}
    for name, query in (("lifecycle", {"lifecycle": ""}), ("list", {"max-keys": "2", "prefix": "J"})):
        headers = objstore.signature_headers("GET", "examplebucket.s3.amazonaws.com", "/", query, b"",
                                             "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                                             "us-east-1", now)
        assert headers["authorization"].endswith("Signature=" + expected[name])


@pytest.mark.parametrize("uri, location", [
    ("s3://models/digits/run-1", Location("models", "digits/run-1")),
    ("s3://models/digits/run-1/", Location("models", "digits/run-1")),
    ("s3://models", Location("models", "")),
])
def test_uris(uri, location):
    assert objstore.parse_uri(uri) == location


@pytest.mark.parametrize("uri", ["s3://", "/var/lib/torchyard/models", "s3:/models"])
def test_bad_uris_are_refused(uri):
    with pytest.raises(ValueError):
        objstore.parse_uri(uri)


def test_objects_round_trip_and_list_by_prefix(s3):
    store = s3.store
    store.put(BUCKET, "a/one", b"1")
    store.put(BUCKET, "a/two words", b"2" * 70000)
    store.put(BUCKET, "b/three", b"3")
    assert store.get(BUCKET, "a/two words") == b"2" * 70000
    assert sorted(store.list(BUCKET, "a/")) == ["a/one", "a/two words"]
    assert store.exists(BUCKET, "b/three") and not store.exists(BUCKET, "b/none")
    with pytest.raises(NotFound):
        store.get(BUCKET, "b/none")


def test_a_wrong_secret_is_an_error_that_says_so(s3):
    store = ObjectStore(s3.endpoint, "torchyard-test", "wrong")
    with pytest.raises(ObjectStoreError, match="403"):
        store.get(BUCKET, "a/one")


def upload(s3, model, tmp_path, prefix: str = PREFIX) -> None:
    local = tmp_path / "artifact"
    save(model, local)
    upload_directory(s3.store, local, Location(BUCKET, prefix), last=METADATA_FILE)


def test_the_model_server_waits_for_loads_and_verifies_an_artifact_in_s3(s3, model, tmp_path, monkeypatch):
    for key, value in s3.environ.items():
        monkeypatch.setenv(key, value)
    uri = f"s3://{BUCKET}/{NAME}/run-2"
    srv = Server(uri)
    try:
        srv.wait_live()
        assert srv.get("/v2/health/ready")[1]["state"] == "waiting for the artifact"
        upload(s3, model, tmp_path, f"{NAME}/run-2")
        srv.wait_ready()
        x = torch.randn(5, FEATURES)
        status, body = srv.post(f"/v2/models/{NAME}/infer", infer_body(x))
        assert status == 200, body
        with torch.no_grad():
            expected = model(x)
        assert torch.allclose(torch.tensor(body["outputs"][0]["data"]).reshape(5, -1), expected, atol=1e-6)
    finally:
        assert srv.stop() == 0


def test_a_tampered_object_is_refused_by_its_digest(s3, model, tmp_path, monkeypatch):
    for key, value in s3.environ.items():
        monkeypatch.setenv(key, value)
    prefix = f"{NAME}/run-3"
    upload(s3, model, tmp_path, prefix)
    config = json.loads(s3.store.get(BUCKET, f"{prefix}/config.json"))
    s3.store.put(BUCKET, f"{prefix}/config.json", json.dumps({**config, "classes": [3, 2, 1, 0]}).encode())
    srv = Server(f"s3://{BUCKET}/{prefix}")
    assert srv.proc.wait(timeout=60) == 1
    assert "sha256 does not match" in srv.proc.stdout.read()


def test_an_s3_location_without_credentials_fails_naming_what_is_missing(monkeypatch):
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)
    srv = Server(URI)
    assert srv.proc.wait(timeout=60) == 1
    assert "needs AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in srv.proc.stdout.read()


def test_save_artifact_to_an_s3_location_uploads_a_verifiable_artifact(s3, model, tmp_path, monkeypatch):
    for key, value in s3.environ.items():
        monkeypatch.setenv(key, value)
    metadata = save(model, f"s3://{BUCKET}/{NAME}/run-4")
    assert sorted(s3.store.list(BUCKET, f"{NAME}/run-4/")) == sorted(
        f"{NAME}/run-4/{name}" for name in ("config.json", "metadata.json", "model.pt", "state_dict.pt"))
    local = ObjectSource(f"s3://{BUCKET}/{NAME}/run-4").fetch()
    assert verify_artifact(local, expected=metadata["sha256"])


def test_a_training_run_writes_its_artifact_to_s3(s3, tmp_path):
    from torchyard_trainer import local as local_gang
    from trainer_gang import DIGITS_MLP, process_environment

    uri = f"s3://{BUCKET}/digits/local-e2e"
    names, environs = local_gang.gang_environs(
        config={**DIGITS_MLP, "epochs": 1}, workers=1, checkpoint_dir=str(tmp_path / "c"), model_dir=uri,
        result_dir=str(tmp_path / "r"))
    results = local_gang.launch([{**e, **process_environment(), **s3.environ} for e in environs], names=names,
                                timeout=240)
    assert results[0].returncode == 0, "\n".join(results[0].output[-30:])
    result = json.loads((tmp_path / "r" / f"{names[0]}.json").read_text())
    assert result["artifact"]["path"] == uri
    fetched = ObjectSource(uri, s3.store).fetch()
    assert verify_artifact(fetched, expected=result["artifact"]["sha256"])


def test_a_store_that_refuses_the_credentials_is_named_when_the_wait_ends(s3, monkeypatch):
    for key, value in {**s3.environ, "AWS_SECRET_ACCESS_KEY": "wrong"}.items():
        monkeypatch.setenv(key, value)
    srv = Server(URI, "--wait-seconds", "1")
    assert srv.proc.wait(timeout=60) == 1
    output = srv.proc.stdout.read()
    assert f"no artifact appeared at {URI} within 1s; last error:" in output and "403" in output
