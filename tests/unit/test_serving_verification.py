"""The golden request against a real HTTP server on 127.0.0.1, and version health from pod objects."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serving import md
from torchyard.golden import GoldenCheck, output_problem
from torchyard.reconcile.health import view_version_health

REQUEST = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}
ANSWER = {"model_name": "digits", "model_version": "3",
          "outputs": [{"name": "output", "datatype": "FP32", "shape": [1, 2], "data": [0.25, -1.5]},
                      {"name": "predictions", "datatype": "INT64", "shape": [1], "data": [0]}]}


@pytest.fixture
def server():
    """A stand-in model server: answers ANSWER, or the status in `server.fail`; records the paths asked."""
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            httpd.seen.append((self.path, body))
            data = json.dumps(ANSWER if not httpd.fail else {"error": "broken"}).encode()
            self.send_response(httpd.fail or 200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.seen, httpd.fail = [], 0
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


def deployment(port: int, expected=None):
    verification = {"goldenRequest": REQUEST, "timeoutSeconds": 2}
    if expected is not None:
        verification["expectedOutput"] = expected
    return md(server={"port": port}, verification=verification)


POD = {"metadata": {"name": "digits-v3-abc"}, "status": {"podIP": "10.244.0.7"}}
LOOPBACK = GoldenCheck(host_of=lambda pod: "127.0.0.1")


def test_a_matching_answer_passes_and_the_request_goes_to_the_versions_endpoint(server):
    check = deployment(server.server_address[1], {"predictions": [0], "output": [[0.25, -1.5]]})
    assert LOOPBACK(check, 3, POD) is True
    assert server.seen == [("/v2/models/digits/versions/3/infer", REQUEST)]


def test_a_different_answer_fails(server):
    assert LOOPBACK(deployment(server.server_address[1], {"predictions": [1]}), 3, POD) is False


def test_an_error_status_fails(server):
    server.fail = 503
    assert LOOPBACK(deployment(server.server_address[1]), 3, POD) is False


def test_a_server_that_cannot_be_reached_fails_closed():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert LOOPBACK(deployment(port), 3, POD) is False
    assert GoldenCheck(host_of=lambda pod: None)(deployment(port), 3, POD) is False
    assert LOOPBACK(deployment(port), 3, None) is False  # no ready pod to ask


@pytest.mark.parametrize("expected, problem", [
    (None, None),
    ({"output": [0.25001, -1.5]}, None),
    ({"output": [0.3, -1.5]}, "output 'output'[0] is 0.25, expected 0.3"),
    ({"probs": [1]}, "output 'probs' is missing"),
    ({"predictions": [0, 1]}, "output 'predictions' has 1 values, expected 2"),
])
def test_output_comparison(expected, problem):
    assert output_problem(ANSWER, expected, 1e-4) == problem


# --- health from pods -------------------------------------------------------------------------------

DEPLOYMENT = {"metadata": {"labels": {"torchyard.dev/version": "3"}}, "spec": {"replicas": 2}}


def pod(name, ready=True, *, version="3", waiting=None, restarts=0, deleting=False, since="2026-01-01T11:00:00Z"):
    container = {"name": "server", "ready": ready, "restartCount": restarts,
                 "state": {"waiting": {"reason": waiting}} if waiting else {"running": {}}}
    meta = {"name": name, "labels": {"torchyard.dev/version": version}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T11:59:00Z"
    return {"metadata": meta, "status": {"conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": since}],
        "containerStatuses": [container]}}


def test_ready_pods_of_the_version_are_counted_and_others_ignored():
    health = view_version_health(DEPLOYMENT, [pod("a"), pod("b", since="2026-01-01T11:30:00Z"), pod("c", version="2"),
                                              pod("d", deleting=True)], crash_loop_restarts=3)
    assert (health.version, health.replicas, health.ready, health.pods) == (3, 2, 2, 2)
    assert health.ready_since.isoformat() == "2026-01-01T11:30:00+00:00"


@pytest.mark.parametrize("pods, crash_looping", [
    ([pod("a", False, waiting="CrashLoopBackOff"), pod("b", False)], 1),
    ([pod("a", False, restarts=3), pod("b")], 1),
    ([pod("a", True, restarts=7), pod("b")], 0),  # restarted often, but serving now
    ([pod("a", False, restarts=2), pod("b")], 0),
])
def test_crash_loops(pods, crash_looping):
    health = view_version_health(DEPLOYMENT, pods, crash_loop_restarts=3)
    assert health.crash_looping == crash_looping
    # With two replicas and a floor of one, one crash-looping pod leaves enough.
    assert not health.crash_loops(floor=1)
    assert health.crash_loops(floor=2) == bool(crash_looping)
