"""Pruning and distillation: the numbers recorded on a compressed ModelVersion must be true."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchyard_trainer.compression import (
    apply_pruning,
    distillation_loss,
    finalize_pruning,
    is_pruned,
    measured_sparsity,
    model_size_bytes,
)

pytestmark = pytest.mark.trainer


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5))


def cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 4))


def linears(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def weight(module: nn.Module) -> torch.Tensor:
    """The weight the forward pass uses, masks applied."""
    if hasattr(module, "weight_mask"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
@pytest.mark.parametrize("factory", [mlp, cnn])
def test_global_unstructured_reaches_the_requested_sparsity(sparsity, factory):
    model = factory()
    originals = torch.cat([m.weight.detach().abs().flatten() for m in linears(model)])
    report = apply_pruning(model, "global-unstructured", sparsity=sparsity)
    effective = torch.cat([weight(m).flatten() for m in linears(model)])
    zeros = int((effective == 0).sum())
    assert zeros == round(sparsity * effective.numel())
    assert report["measuredSparsity"] == zeros / effective.numel() == measured_sparsity(model)
    assert abs(report["measuredSparsity"] - sparsity) <= 1 / effective.numel()
    # Magnitude pruning: every removed weight was no larger than every kept one.
    assert originals[effective == 0].max() <= originals[effective != 0].min()
    assert report["prunedParameters"] == [f"{n}.weight" for n, m in model.named_modules() if m in linears(model)]
    assert report["nonzeroParameters"] == sum(int((p != 0).sum()) for p in [weight(m) for m in linears(model)]) + sum(
        int((m.bias != 0).sum()) for m in linears(model))


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("factory", [mlp, cnn])
def test_structured_channel_zeroes_whole_channels_of_smallest_norm(sparsity, factory):
    model = factory()
    layers = linears(model)
    norms = [m.weight.detach().flatten(1).norm(dim=1) for m in layers]
    output_before = layers[-1].weight.detach().clone()
    report = apply_pruning(model, "structured-channel", sparsity=sparsity)
    for layer, norm in zip(layers[:-1], norms):
        rows = weight(layer).flatten(1)
        dead = (rows == 0).all(dim=1)
        assert int(dead.sum()) == sparsity * rows.shape[0]
        assert ((rows != 0).all(dim=1) | dead).all()  # a channel is either whole or gone
        assert norm[dead].max() <= norm[~dead].min()
        assert (weight_bias(layer)[dead] == 0).all()
    assert torch.equal(weight(layers[-1]), output_before)  # the model's outputs are never pruned
    assert report["measuredSparsity"] == sparsity
    assert len(report["prunedParameters"]) == len(layers) - 1


def weight_bias(module: nn.Module) -> torch.Tensor:
    if hasattr(module, "bias_mask"):
        return (module.bias_orig * module.bias_mask).detach()
    return module.bias.detach()


def test_threshold_prunes_exactly_the_small_weights():
    model = mlp()
    before = [m.weight.detach().clone() for m in linears(model)]
    report = apply_pruning(model, "global-unstructured", threshold=0.05)
    for layer, original in zip(linears(model), before):
        assert torch.equal(weight(layer) == 0, original.abs() < 0.05)
    small = sum(int((w.abs() < 0.05).sum()) for w in before)
    assert report["measuredSparsity"] == small / sum(w.numel() for w in before)
    assert report["threshold"] == 0.05 and report["requestedSparsity"] is None


def test_channel_threshold_prunes_channels_of_small_norm():
    model = mlp()
    first = linears(model)[0]
    norms = first.weight.detach().norm(dim=1)
    threshold = float(norms.median())
    apply_pruning(model, "structured-channel", threshold=threshold)
    dead = (weight(first) == 0).all(dim=1)
    assert torch.equal(dead, norms < threshold)
    assert 0 < int(dead.sum()) < first.weight.shape[0]


@pytest.mark.parametrize("method", ["global-unstructured", "structured-channel"])
def test_zeros_survive_fine_tuning_while_masks_are_attached(method):
    model = mlp()
    apply_pruning(model, method, sparsity=0.5)
    zero_before = [weight(m) == 0 for m in linears(model)]
    before = [weight(m).clone() for m in linears(model)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(64, 12), torch.randint(0, 5, (64,))
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    for layer, zeros, old in zip(linears(model), zero_before, before):
        assert torch.equal(weight(layer) == 0, zeros)
    assert any(not torch.equal(weight(m), old) for m, old in zip(linears(model), before))  # it did train
    assert finalize_pruning(model) > 0
    assert not is_pruned(model)
    assert sorted(model.state_dict()) == sorted(mlp().state_dict())
    for layer, zeros in zip(linears(model), zero_before):
        assert torch.equal(layer.weight.detach() == 0, zeros)


def test_dense_and_sparse_sizes():
    layer = nn.Linear(100, 10)
    assert model_size_bytes(layer) == (100 * 10 + 10) * 4
    with torch.no_grad():
        layer.weight[:, 10:] = 0  # 100 of 1000 weights remain
    # CSR: 100 values and 100 column indices, 11 row offsets (32-bit each), plus the dense bias.
    assert model_size_bytes(layer, sparse=True) == 100 * 4 + 100 * 4 + 11 * 4 + 10 * 4
    dense_model = mlp()
    assert model_size_bytes(dense_model, sparse=True) > model_size_bytes(dense_model)  # no free lunch


def test_report_sizes_shrink_only_at_high_sparsity():
    low, high = mlp(), mlp()
    low_report = apply_pruning(low, "global-unstructured", sparsity=0.3)
    high_report = apply_pruning(high, "global-unstructured", sparsity=0.9)
    assert low_report["denseSizeBytes"] == high_report["denseSizeBytes"] == model_size_bytes(mlp())
    assert low_report["sparseSizeBytes"] > low_report["denseSizeBytes"]
    assert high_report["sparseSizeBytes"] < high_report["denseSizeBytes"] / 3


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "random", "sparsity": 0.5}, "not one of"),
    ({"method": "global-unstructured"}, "exactly one"),
    ({"method": "global-unstructured", "sparsity": 0.5, "threshold": 0.1}, "exactly one"),
    ({"method": "global-unstructured", "sparsity": 1.0}, r"\[0, 1\)"),
    ({"method": "structured-channel", "threshold": -1.0}, "negative"),
])
def test_bad_pruning_requests_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        apply_pruning(mlp(), **kwargs)


def test_pruning_twice_needs_finalize_first():
    model = mlp()
    apply_pruning(model, "global-unstructured", sparsity=0.5)
    with pytest.raises(ValueError, match="finalize_pruning"):
        apply_pruning(model, "global-unstructured", sparsity=0.7)
    finalize_pruning(model)
    assert apply_pruning(model, "global-unstructured", sparsity=0.7)["measuredSparsity"] == pytest.approx(0.7, abs=1e-3)


def test_structured_pruning_needs_a_layer_besides_the_output():
    with pytest.raises(ValueError, match="no Linear or Conv layer"):
        apply_pruning(nn.Linear(4, 2), "structured-channel", sparsity=0.5)


def test_distillation_loss_matches_hand_computation():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]])
    targets = torch.tensor([1, 2])
    t, alpha = 2.0, 0.3

    def softmax(row):
        exps = [math.exp(v / t) for v in row]
        return [e / sum(exps) for e in exps]

    kl = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p, q = softmax(t_row), softmax(s_row)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    kl /= 2
    ce = 0.0
    for row, y in zip(student.tolist(), targets.tolist()):
        ce -= math.log(math.exp(row[y]) / sum(math.exp(v) for v in row))
    ce /= 2
    expected = alpha * t * t * kl + (1 - alpha) * ce
    assert distillation_loss(student, teacher, targets, t, alpha).item() == pytest.approx(expected, rel=1e-5)


def test_distillation_reduces_to_cross_entropy_and_ignores_teacher_gradients():
    torch.manual_seed(0)
    student = torch.randn(8, 4, requires_grad=True)
    teacher = torch.randn(8, 4, requires_grad=True)
    targets = torch.randint(0, 4, (8,))
    assert torch.allclose(distillation_loss(student, teacher, targets, 3.0, 0.0), F.cross_entropy(student, targets))
    agree = distillation_loss(teacher.detach(), teacher, targets, 3.0, 1.0)
    assert agree.item() == pytest.approx(0.0, abs=1e-6)
    distillation_loss(student, teacher, targets, 3.0, 0.5).backward()
    assert teacher.grad is None and student.grad is not None


@pytest.mark.parametrize("temperature,alpha,message", [(0.0, 0.5, "temperature"), (2.0, 1.5, "alpha")])
def test_bad_distillation_settings_are_refused(temperature, alpha, message):
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=message):
        distillation_loss(logits, logits, torch.tensor([0, 1]), temperature, alpha)
