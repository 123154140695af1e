"""The model server as a user meets it: a real process on 127.0.0.1 speaking Open Inference v2."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from torch import nn

from torchyard_trainer.artifact import save_artifact

pytestmark = pytest.mark.trainer

FEATURES, CLASSES = 6, 4
NAME, VERSION = "tiny", "3"


def trained_model() -> nn.Module:
    """A small classifier after a few real optimizer steps."""
    torch.manual_seed(0)
    x = torch.randn(200, FEATURES)
    y = (x[:, :CLASSES] * torch.tensor([1.0, -1.5, 0.7, 2.0])).argmax(dim=1)
    model = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(40):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def save(model: nn.Module, directory: Path) -> dict:
    config = {"architecture": {"name": "mlp", "hiddenSizes": [16]}, "inputShape": [FEATURES],
              "numOutputs": CLASSES, "task": "classification", "classes": [0, 1, 2, 3]}
    return save_artifact(model, directory, config=config, metrics={"accuracy": 0.9}, metric="accuracy",
                         lineage={"job": "tj"}, model_name=NAME)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, body: bytes | dict | None = None) -> tuple[int, dict | str]:
    """(status, parsed JSON or text) of a GET, or of a POST when ``body`` is given."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, kind = response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    return status, json.loads(raw) if kind.startswith("application/json") else raw.decode()


class Server:
    """``python -m torchyard_trainer.serve`` as a subprocess."""

    def __init__(self, model_dir: Path, *extra: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "torchyard_trainer.serve", "--model-dir", str(model_dir), "--model-name", NAME,
             "--model-version", VERSION, "--host", "127.0.0.1", "--port", str(self.port), "--threads", "1", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def get(self, path: str) -> tuple[int, dict | str]:
        return call(self.base + path)

    def post(self, path: str, body: bytes | dict) -> tuple[int, dict | str]:
        return call(self.base + path, body)

    def wait_live(self, timeout: float = 60) -> None:
        self._wait(lambda: self.get("/v2/health/live")[0] == 200, timeout, "live")

    def wait_ready(self, timeout: float = 60) -> None:
        self._wait(lambda: self.get("/v2/health/ready")[0] == 200, timeout, "ready")

    def _wait(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited with {self.proc.returncode}: {self.proc.stdout.read()}"
            try:
                if check():
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not {what} within {timeout}s")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def infer_body(x: torch.Tensor, **overrides) -> dict:
    spec = {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}
    spec.update(overrides)
    return {"inputs": [spec]}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.set_num_threads(1)
    return trained_model()


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("models") / NAME / VERSION
    save(model, directory)
    srv = Server(directory)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_ready_only_after_the_artifact_is_loaded_and_stops_on_sigterm(model, tmp_path):
    directory = tmp_path / NAME / VERSION
    srv = Server(directory)
    try:
        srv.wait_live()
        status, body = srv.get("/v2/health/ready")
        assert (status, body["ready"], body["state"]) == (503, False, "waiting for the artifact")
        assert srv.get(f"/v2/models/{NAME}/ready")[0] == 503
        status, body = srv.post(f"/v2/models/{NAME}/infer", infer_body(torch.zeros(1, FEATURES)))
        assert status == 503 and "not ready" in body["error"]
        save(model, directory)
        srv.wait_ready()
        assert srv.get(f"/v2/models/{NAME}/versions/{VERSION}/ready") == (200, {"name": NAME, "ready": True, "state": "ready"})
    finally:
        assert srv.stop() == 0


def test_tampered_artifact_never_becomes_ready(model, tmp_path):
    directory = tmp_path / NAME / VERSION
    save(model, directory)
    (directory / "config.json").write_text((directory / "config.json").read_text().replace("mlp", "MLP"))
    srv = Server(directory)
    seen_ready = False
    deadline = time.monotonic() + 60
    while srv.proc.poll() is None and time.monotonic() < deadline:
        try:
            seen_ready |= srv.get("/v2/health/ready")[0] == 200
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)
    assert srv.stop() == 1
    assert not seen_ready
    assert "sha256 does not match" in srv.proc.stdout.read()


def test_expected_digest_is_enforced(model, tmp_path):
    directory = tmp_path / NAME / VERSION
    save(model, directory)
    srv = Server(directory, "--sha256", "0" * 64)
    assert srv.proc.wait(timeout=60) == 1


def test_infer_returns_the_in_process_predictions(server, model):
    x = torch.randn(16, FEATURES)
    with torch.no_grad():
        expected = model(x)
    for path in (f"/v2/models/{NAME}/infer", f"/v2/models/{NAME}/versions/{VERSION}/infer"):
        status, body = server.post(path, {"id": "req-1", **infer_body(x)})
        assert status == 200, body
        assert (body["model_name"], body["model_version"], body["id"]) == (NAME, VERSION, "req-1")
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["output"]["shape"] == [16, CLASSES] and outputs["output"]["datatype"] == "FP32"
        assert torch.allclose(torch.tensor(outputs["output"]["data"]).reshape(16, CLASSES), expected, atol=1e-6)
        assert outputs["predictions"] == {"name": "predictions", "datatype": "INT64", "shape": [16],
                                          "data": expected.argmax(1).tolist()}


def test_nested_data_and_output_selection(server):
    x = torch.randn(3, FEATURES)
    flat = server.post(f"/v2/models/{NAME}/infer", infer_body(x))[1]
    nested_body = infer_body(x, data=x.tolist())
    nested_body["outputs"] = [{"name": "predictions"}]
    status, nested = server.post(f"/v2/models/{NAME}/infer", nested_body)
    assert status == 200
    assert [o["name"] for o in nested["outputs"]] == ["predictions"]
    assert nested["outputs"][0] == [o for o in flat["outputs"] if o["name"] == "predictions"][0]


def test_metadata_describes_the_model(server):
    status, body = server.get(f"/v2/models/{NAME}")
    assert status == 200
    assert body["name"] == NAME and body["versions"] == [VERSION] and body["platform"] == "pytorch_torchscript"
    assert body["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, FEATURES]}]
    assert [o["name"] for o in body["outputs"]] == ["output", "predictions"]
    assert len(body["parameters"]["sha256"]) == 64
    assert server.get(f"/v2/models/{NAME}/versions/{VERSION}")[1] == body
    assert server.get("/v2/health/live") == (200, {"live": True})


GOOD = [0.0] * FEATURES


@pytest.mark.parametrize("path,body,status,message", [
    (f"/v2/models/{NAME}/infer", b'{"inputs": [', 400, "not valid JSON"),
    (f"/v2/models/{NAME}/infer", b"[1, 2]", 400, "JSON object"),
    (f"/v2/models/{NAME}/infer", b'{"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32", '
                                  b'"data": [0, 0, 0, 0, 0, NaN]}]}', 400, "NaN"),
    (f"/v2/models/{NAME}/infer", {"id": "x"}, 400, "no inputs"),
    (f"/v2/models/{NAME}/infer", {"inputs": [{"name": "input", "shape": [1, 7], "datatype": "FP32", "data": GOOD + [0]}]},
     400, "shape [1, 7] does not match [N, 6]"),
    (f"/v2/models/{NAME}/infer", {"inputs": [{"name": "input", "shape": [2, 6], "datatype": "FP32", "data": GOOD}]},
     400, "has 6 values; shape [2, 6] needs 12"),
    (f"/v2/models/{NAME}/infer", {"inputs": [{"name": "input", "shape": [1, 6], "datatype": "INT64", "data": GOOD}]},
     400, "datatype is 'INT64'"),
    (f"/v2/models/{NAME}/infer", {"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32",
                                              "data": [0, 0, "a", 0, 0, 0]}]}, 400, '"a", which is not a number'),
    (f"/v2/models/{NAME}/infer", {"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32",
                                              "data": [0, 0, True, 0, 0, 0]}]}, 400, "true, which is not a number"),
    (f"/v2/models/{NAME}/infer", {"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32",
                                              "data": [0, 0, 1e39, 0, 0, 0]}]}, 400, "FP32 range"),
    (f"/v2/models/{NAME}/infer", {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32", "data": GOOD}]},
     400, "inputs[0].name is 'x'"),
    (f"/v2/models/{NAME}/infer", {"inputs": [{"name": "input", "shape": [0, 6], "datatype": "FP32", "data": []}]},
     400, "batch size 0"),
    (f"/v2/models/{NAME}/infer", {**infer_body(torch.zeros(1, FEATURES)), "outputs": [{"name": "probs"}]},
     400, "'probs' does not exist"),
    ("/v2/models/other/infer", infer_body(torch.zeros(1, FEATURES)), 404, "'other' is not served here"),
    (f"/v2/models/{NAME}/versions/9/infer", infer_body(torch.zeros(1, FEATURES)), 404, "no version '9'"),
])
def test_malformed_requests_get_a_client_error_that_names_the_problem(server, path, body, status, message):
    got_status, got = server.post(path, body)
    assert got_status == status
    assert message in got["error"]
    assert server.get("/v2/health/ready")[0] == 200  # and the server keeps serving


@pytest.mark.parametrize("path,status", [("/v2/models/other", 404), (f"/v2/models/{NAME}/versions/9/ready", 404),
                                         ("/v2/nothing", 404), (f"/v2/models/{NAME}/infer", 405)])
def test_unknown_gets(server, path, status):
    got_status, body = server.get(path)
    assert got_status == status and body["error"]


def metric_values(server: Server) -> dict[tuple, float]:
    status, text = server.get("/metrics")
    assert status == 200
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            assert labels.pop("model_name") == NAME and labels.pop("model_version") == VERSION
            values[(sample.name, *sorted(labels.items()))] = sample.value
    return values


def test_metrics_count_requests_errors_and_latency(server):
    before = metric_values(server)
    server.post(f"/v2/models/{NAME}/infer", infer_body(torch.zeros(2, FEATURES)))
    server.post(f"/v2/models/{NAME}/infer", infer_body(torch.zeros(2, FEATURES), datatype="BYTES"))
    server.post("/v2/models/other/infer", infer_body(torch.zeros(2, FEATURES)))
    after = metric_values(server)

    def delta(*key):
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("torchyard_model_requests_total", ("code", "200")) == 1
    assert delta("torchyard_model_requests_total", ("code", "400")) == 1
    assert delta("torchyard_model_requests_total", ("code", "404")) == 1
    assert delta("torchyard_model_errors_total", ("reason", "bad_input")) == 1
    assert delta("torchyard_model_errors_total", ("reason", "unknown_model")) == 1
    assert delta("torchyard_model_request_seconds_count") == 3
    assert delta("torchyard_model_request_seconds_sum") > 0
    assert after[("torchyard_model_ready",)] == 1


def raw_post(server: Server, headers: str) -> tuple[int, dict]:
    """A POST with hand-written headers and no body, for what ordinary clients never send."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("headers,status,message", [
    ("", 411, "no Content-Length"),
    ("Content-Length: lots\r\n", 400, "'lots' is not a number"),
    ("Content-Length: 999999999999\r\n", 413, "exceeds"),
])
def test_bodies_without_a_usable_length_are_refused(server, headers, status, message):
    got_status, body = raw_post(server, headers)
    assert got_status == status and message in body["error"]


def test_connections_are_kept_alive_across_requests(server):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        body = json.dumps(infer_body(torch.zeros(1, FEATURES)))
        sockets = set()
        for path in ("/v2/health/ready", f"/v2/models/{NAME}/infer", f"/v2/models/{NAME}/infer", "/metrics"):
            post = path.endswith("infer")
            connection.request("POST" if post else "GET", path, body=body if post else None)
            response = connection.getresponse()
            response.read()
            assert response.status == 200 and response.version == 11
            assert (response.getheader("Connection") or "").lower() != "close"
            sockets.add(id(connection.sock))
        assert len(sockets) == 1
    finally:
        connection.close()


def test_adaptive_batching_answers_each_request_with_its_own_rows(model, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    directory = tmp_path / NAME / VERSION
    save(model, directory)
    srv = Server(directory, "--batch-max-size", "8", "--batch-max-wait-ms", "5")
    try:
        srv.wait_ready()
        inputs = [torch.randn(1 + i % 3, FEATURES) for i in range(24)]
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(lambda x: srv.post(f"/v2/models/{NAME}/infer", infer_body(x)), inputs))
        for x, (status, body) in zip(inputs, answers):
            assert status == 200, body
            with torch.no_grad():
                expected = model(x)
            got = torch.tensor(body["outputs"][0]["data"]).reshape(expected.shape)
            assert torch.allclose(got, expected, atol=1e-5)
        values = metric_values(srv)
        rows, passes = values[("torchyard_model_batched_rows_total",)], values[("torchyard_model_batches_total",)]
        assert rows == sum(len(x) for x in inputs)
        assert -(-rows // 8) <= passes <= len(inputs)
    finally:
        assert srv.stop() == 0


def test_sigterm_lets_a_request_in_flight_finish_before_exiting(model, tmp_path):
    directory = tmp_path / NAME / VERSION
    save(model, directory)
    srv = Server(directory)
    srv.wait_ready()
    body = json.dumps(infer_body(torch.zeros(1, FEATURES))).encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                     + body[:10])
        time.sleep(0.5)  # the server has the request's head and waits for the rest of its body
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert srv.proc.poll() is None, "the server exited with a request in flight"
        sock.sendall(body[10:])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, answer = reply.partition(b"\r\n\r\n")
    assert head.split()[1] == b"200" and json.loads(answer)["model_name"] == NAME
    assert b"connection: close" in head.lower()
    assert srv.proc.wait(timeout=15) == 0


def test_a_request_the_http_parser_refuses_gets_a_json_error(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"NOT AN HTTP REQUEST\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400" and b"application/json" in head
    assert json.loads(body) == {"error": "malformed HTTP request"}
    assert server.get("/v2/health/ready")[0] == 200
