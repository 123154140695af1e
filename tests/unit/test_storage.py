"""spec.storage with an S3-compatible URI: parsed, checked, and carried into the pods.

The location reaches the trainer through the contract's checkpoint and model directories; the
Secret reaches it key by key as secretKeyRef variables, the same ones the model server gets, and
never by value.
"""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from jobs import ALLREDUCE_CPU, UID
from test_crd_schema import SCHEMA
from torchyard.api.errors import SpecError
from torchyard.api.trainingjob import parse_training_job
from torchyard.builders.pods import build_pods
from torchyard.settings import Settings
from torchyard_spec import contract

SETTINGS = Settings(progress_url_base="http://torchyard.torchyard-system.svc:8080", progress_key=b"test-key")
RUN = f"digits-{UID[:8]}"


def with_storage(**storage) -> dict:
    obj = copy.deepcopy(ALLREDUCE_CPU)
    obj["spec"]["storage"] = storage
    return obj


def test_an_s3_uri_becomes_the_runs_checkpoint_and_model_locations():
    pods = build_pods(parse_training_job(with_storage(uri="s3://models/team-a/", secretName="s3")), 0, SETTINGS)
    for pod in pods:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env[contract.CHECKPOINT_DIR] == f"s3://models/team-a/checkpoints/{RUN}"
        assert env[contract.MODEL_DIR] == f"s3://models/team-a/models/digits/{RUN}"


def test_the_secret_reaches_the_pods_as_key_references_never_values():
    pod = build_pods(parse_training_job(with_storage(uri="s3://models", secretName="s3-creds")), 0, SETTINGS)[0]
    env = pod["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs == {"AWS_ENDPOINT_URL": {"name": "s3-creds", "key": "AWS_ENDPOINT_URL"},
                    "AWS_ACCESS_KEY_ID": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"},
                    "AWS_SECRET_ACCESS_KEY": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"},
                    "AWS_REGION": {"name": "s3-creds", "key": "AWS_REGION", "optional": True}}
    assert not [e for e in env if e["name"].startswith("AWS_") and "value" in e]


def test_a_claim_job_gets_no_secret_and_keeps_its_directories():
    obj = with_storage(claimName="data")
    env = build_pods(parse_training_job(obj), 0, SETTINGS)[0]["spec"]["containers"][0]["env"]
    assert not [e for e in env if e["name"].startswith("AWS_")]
    assert {e["name"]: e.get("value") for e in env}[contract.CHECKPOINT_DIR] == f"/var/lib/torchyard/checkpoints/{RUN}"


@pytest.mark.parametrize("storage, field, words", [
    ({"uri": "s3://models/a", "claimName": "data", "secretName": "s3"}, "spec.storage.uri", "exclude each other"),
    ({"uri": "s3://models/a"}, "spec.storage.secretName", "is required with spec.storage.uri"),
    ({"secretName": "s3"}, "spec.storage.secretName", "only with it"),
    ({"uri": "s3://Models/a", "secretName": "s3"}, "spec.storage.uri", "s3://<bucket>"),
    ({"uri": "/var/lib/models", "secretName": "s3"}, "spec.storage.uri", "s3://<bucket>"),
    ({"uri": "s3://", "secretName": "s3"}, "spec.storage.uri", "s3://<bucket>"),
])
def test_an_ill_formed_storage_spec_names_the_field(storage, field, words):
    with pytest.raises(SpecError) as raised:
        parse_training_job(with_storage(**storage))
    assert str(raised.value).startswith(field) and words in str(raised.value)


def test_the_crd_pattern_is_the_parsers():
    storage = SCHEMA["properties"]["spec"]["properties"]["storage"]
    assert storage["properties"]["uri"]["pattern"] == contract.S3_URI_PATTERN
    rules = yaml.safe_dump(storage["x-kubernetes-validations"])
    assert re.search(r"fieldPath: \.uri", rules) and re.search(r"fieldPath: \.secretName", rules)
