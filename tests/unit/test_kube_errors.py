"""The API layer's error mapping for requests that got no answer at all."""

import kopf
import pytest
import urllib3
from kubernetes import client

from torchyard.kube.client import REQUEST_TIMEOUT, Kube, translated


def test_a_request_that_got_no_answer_is_temporary():
    # A connection reset is no ApiException; untranslated, it ended the resync loop for good.
    with pytest.raises(kopf.TemporaryError, match="list pods of ml/digits"):
        with translated("list pods of ml/digits"):
            raise urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))


def test_every_call_gets_a_timeout_unless_it_brings_its_own():
    api, seen = client.ApiClient(), []
    api.call_api = lambda *args, **kwargs: seen.append(kwargs.get("_request_timeout"))
    Kube(api)
    api.call_api("GET", "/api/v1/pods", _request_timeout=None)
    api.call_api("GET", "/api/v1/pods", _request_timeout=3)
    assert seen == [REQUEST_TIMEOUT, 3]
