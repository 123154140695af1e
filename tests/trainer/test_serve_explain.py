"""Explanations: Integrated Gradients where the right answer is known, in process and over HTTP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from test_serve import FEATURES, NAME, VERSION, Server, infer_body
from torchyard_trainer.artifact import save_artifact
from torchyard_trainer.models import build_model
from torchyard_trainer.serve_explain import integrated_gradients, quadrature

pytestmark = pytest.mark.trainer


def linear_model() -> nn.Linear:
    torch.manual_seed(1)
    return nn.Linear(FEATURES, 3).eval()


def digits_mlp() -> nn.Module:
    """The bundled MLP, trained briefly on scikit-learn's digits: ReLUs make its gradients vary along the path."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "hiddenSizes": [32]}, (64,), 10)
    model.set_input_stats(x.mean(0), x.std(0).clamp_min(1e-3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def digits_rows(n: int) -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits(return_X_y=True)[0][:n], dtype=torch.float32)


def serve(model: nn.Module, directory, features: int, classes: int) -> Server:
    config = {"architecture": {"name": "mlp", "hiddenSizes": []}, "inputShape": [features], "numOutputs": classes,
              "task": "classification", "classes": list(range(classes))}
    save_artifact(model, directory, config=config, metrics={"accuracy": 1.0}, metric="accuracy",
                  lineage={"job": "tj"}, model_name=NAME)
    server = Server(directory)
    server.wait_ready()
    return server


def test_quadrature_weights_add_up_to_one_on_the_unit_interval():
    points, weights = quadrature(7)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-6)
    assert 0 < float(points.min()) and float(points.max()) < 1


def test_linear_model_attributions_are_weight_times_distance_from_the_baseline():
    model = linear_model()
    x, baseline = torch.randn(5, FEATURES), torch.randn(FEATURES)
    target = torch.tensor([0, 1, 2, 0, 1])
    attributions, delta = integrated_gradients(model, x, baseline, target, steps=3)
    expected = model.weight.detach()[target] * (x - baseline)
    assert torch.allclose(attributions, expected, atol=1e-5)
    assert torch.allclose(delta, torch.zeros(5), atol=1e-4)


def test_mlp_attributions_sum_to_the_output_difference():
    model, x = digits_mlp(), digits_rows(8)
    target = model(x).argmax(1)
    attributions, delta = integrated_gradients(model, x, torch.zeros(64), target, steps=64)
    with torch.no_grad():
        change = model(x).gather(1, target[:, None]) - model(torch.zeros(1, 64))[0, target][:, None]
    assert torch.allclose(attributions.sum(1), change.squeeze(1), rtol=0.02, atol=0.02)
    assert torch.allclose(delta, attributions.sum(1) - change.squeeze(1), atol=1e-4)


@pytest.fixture(scope="module")
def linear_server(tmp_path_factory):
    model = linear_model()
    server = serve(model, tmp_path_factory.mktemp("linear") / NAME / VERSION, FEATURES, 3)
    try:
        yield server, model
    finally:
        server.stop()


def test_explain_endpoint_answers_weight_times_input_for_a_linear_model(linear_server):
    server, model = linear_server
    x = torch.randn(4, FEATURES)
    body = {"id": "e-1", **infer_body(x), "parameters": {"target": 2, "baseline": 0.5, "steps": 8}}
    for path in (f"/v2/models/{NAME}/explain", f"/v2/models/{NAME}/versions/{VERSION}/explain"):
        status, answer = server.post(path, body)
        assert status == 200, answer
        assert (answer["model_name"], answer["model_version"], answer["id"]) == (NAME, VERSION, "e-1")
        assert answer["parameters"] == {"method": "integrated_gradients", "integration": "gauss_legendre",
                                        "steps": 8, "baseline": 0.5}
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert outputs["attributions"]["shape"] == [4, FEATURES]
        assert outputs["target"]["data"] == [2, 2, 2, 2]
        got = torch.tensor(outputs["attributions"]["data"]).reshape(4, FEATURES)
        assert torch.allclose(got, model.weight.detach()[2] * (x - 0.5), atol=1e-5)


def test_explain_defaults_to_the_predicted_class_and_a_zero_baseline(linear_server):
    server, model = linear_server
    x = torch.randn(3, FEATURES)
    status, answer = server.post(f"/v2/models/{NAME}/explain", infer_body(x))
    assert status == 200, answer
    outputs = {o["name"]: o for o in answer["outputs"]}
    with torch.no_grad():
        assert outputs["target"]["data"] == model(x).argmax(1).tolist()
    assert answer["parameters"]["baseline"] == "zeros" and answer["parameters"]["steps"] == 50


@pytest.mark.parametrize("parameters, message", [
    ({"steps": 0}, "parameters.steps must be an integer from 1 to 1024, got 0"),
    ({"steps": 2.5}, "parameters.steps must be an integer"),
    ({"target": 3}, "parameters.target must be an output index from 0 to 2, got 3"),
    ({"baseline": "mean"}, "parameters.baseline must be \"zeros\", a number or an input row"),
    ({"baseline": [0.0] * (FEATURES - 1)}, "parameters.baseline: data has 5 values; shape [1, 6] needs 6"),
    ([], "parameters must be an object"),
])
def test_bad_explain_parameters_are_named(linear_server, parameters, message):
    server, _ = linear_server
    status, answer = server.post(f"/v2/models/{NAME}/explain",
                                 {**infer_body(torch.zeros(1, FEATURES)), "parameters": parameters})
    assert status == 400 and message in answer["error"]


def test_explain_is_refused_like_inference_for_another_model_or_a_get(linear_server):
    server, _ = linear_server
    assert server.post("/v2/models/other/explain", infer_body(torch.zeros(1, FEATURES)))[0] == 404
    assert server.get(f"/v2/models/{NAME}/explain")[0] == 405


def test_served_digits_mlp_attributions_sum_to_the_output_difference(tmp_path):
    model = digits_mlp()
    server = serve(model, tmp_path / NAME / VERSION, 64, 10)
    try:
        x = digits_rows(4)
        status, answer = server.post(f"/v2/models/{NAME}/explain", {**infer_body(x), "parameters": {"steps": 64}})
        assert status == 200, answer
    finally:
        server.stop()
    outputs = {o["name"]: o for o in answer["outputs"]}
    target = torch.tensor(outputs["target"]["data"])
    attributions = torch.tensor(outputs["attributions"]["data"]).reshape(4, 64)
    with torch.no_grad():
        change = model(x).gather(1, target[:, None]).squeeze(1) - model(torch.zeros(1, 64))[0, target]
    assert torch.allclose(attributions.sum(1), change, rtol=0.02, atol=0.02)
    assert torch.allclose(torch.tensor(outputs["convergence_delta"]["data"]), attributions.sum(1) - change, atol=1e-3)
