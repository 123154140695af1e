"""The kind end-to-end tier: the chart installed with real images by hack/kind-e2e.sh.

These tests need what that script sets up (a cluster whose pods really run, the operator
installed in it) and the environment it exports; run anywhere else they are skipped with a
message saying so. The integration tests' own fixtures (tests/integration/conftest.py) are not
used here: the operator under test is the one in the cluster.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

NEEDED = ("KUBECONFIG", "TORCHYARD_E2E_RELEASE", "TORCHYARD_E2E_RELEASE_NAMESPACE", "TORCHYARD_E2E_NAMESPACE")


@dataclass
class Installed:
    """The release under test and API clients for its cluster."""

    release: str
    release_namespace: str
    namespace: str  # the namespace the operator watches
    image_tag: str
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def service_get(self, path: str) -> str:
        """GET a path of the operator's Service through the API server's service proxy."""
        return self.core.connect_get_namespaced_service_proxy_with_path(
            f"{self.release}:http", self.release_namespace, path.lstrip("/"))


def pytest_collection_modifyitems(items):
    missing = [name for name in NEEDED if not os.environ.get(name)]
    if missing:
        reason = (f"kind end-to-end tests run through hack/kind-e2e.sh (make e2e), which sets {', '.join(missing)}; "
                  "they need Docker and kind")
        here = Path(__file__).parent
        for item in items:  # this hook sees every collected test; mark only this directory's
            if here in Path(item.fspath).parents:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def installed() -> Installed:
    api = config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
    yield Installed(os.environ["TORCHYARD_E2E_RELEASE"], os.environ["TORCHYARD_E2E_RELEASE_NAMESPACE"],
                    os.environ["TORCHYARD_E2E_NAMESPACE"], os.environ.get("TORCHYARD_E2E_IMAGE_TAG", "e2e"), api)
    api.close()
