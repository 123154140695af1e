"""Gradient buckets leave for the parameter servers during backward, in the order servers expect."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchyard_trainer import ps_overlap
from torchyard_trainer import ps_protocol as wire

pytestmark = pytest.mark.trainer


class Sent:
    """What a worker handed to ``isend``, and whether backward had reached the first layer by then."""

    def __init__(self, first_layer: nn.Linear):
        self.first_layer = first_layer
        self.messages: list[tuple[int, torch.Tensor, bool]] = []

    def isend(self, tensor, dst, tag):
        assert tag == wire.TAG_GRADIENTS
        self.messages.append((dst, tensor.clone(), self.first_layer.weight.grad is not None))
        return None

    def received_by(self, server: int, plan: wire.ShardPlan) -> torch.Tensor:
        """The server's flat gradient, filled bucket by bucket in arrival order, as ShardHost does."""
        payload = torch.full((plan.numel(server),), float("nan"))
        chunks = [t for dst, t, _ in self.messages if dst == server]
        buckets = plan.buckets(server)
        assert len(chunks) == len(buckets)
        for bucket, chunk in zip(buckets, chunks):
            payload[bucket.start:bucket.end] = chunk
        return payload


def backward_with_pusher(model: nn.Module, servers: int, monkeypatch) -> tuple[Sent, wire.ShardPlan, list]:
    torch.manual_seed(0)
    params = list(model.parameters())
    plan = wire.plan_shards([p.numel() for p in params], servers)
    sent = Sent(model[0])
    monkeypatch.setattr(ps_overlap.dist, "isend", sent.isend)
    pusher = ps_overlap.BucketPusher(plan, params)
    pusher.push(model[:5](torch.randn(3, 16)).square().sum())
    return sent, plan, params


def wide_mlp(*extra: nn.Module) -> nn.Sequential:
    """Two buckets on one server: the 512x512 layer fills the first (last tensors first)."""
    return nn.Sequential(nn.Linear(16, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 4), *extra)


@pytest.mark.parametrize("servers", [1, 2])
def test_every_server_gets_its_gradients_in_model_order_whatever_the_buckets(monkeypatch, servers):
    sent, plan, params = backward_with_pusher(wide_mlp(), servers, monkeypatch)
    for server in range(servers):
        expected = wire.flatten([params[i].grad for i in plan.owned(server)])
        assert torch.equal(sent.received_by(server, plan), expected)


def test_the_last_layers_bucket_leaves_before_backward_reaches_the_first_layer(monkeypatch):
    sent, plan, _ = backward_with_pusher(wide_mlp(), 1, monkeypatch)
    assert len(plan.buckets(0)) == 2
    assert [first_layer_done for _, _, first_layer_done in sent.messages] == [False, True]


def test_a_parameter_without_a_gradient_holds_its_bucket_back_and_is_sent_as_zeros(monkeypatch):
    unused = nn.Linear(4, 2)  # after the forward's last layer: it is in the first bucket to leave
    sent, plan, params = backward_with_pusher(wide_mlp(unused), 1, monkeypatch)
    assert [first_layer_done for _, _, first_layer_done in sent.messages] == [True, True]
    received = sent.received_by(0, plan)
    assert torch.equal(received[-unused.weight.numel() - 2:], torch.zeros(unused.weight.numel() + 2))
    used = wire.flatten([p.grad for p in params[:6]])
    assert torch.equal(received[:used.numel()], used)


def test_a_backward_outside_a_push_sends_nothing(monkeypatch):
    model = wide_mlp()
    sent, _, _ = backward_with_pusher(model, 1, monkeypatch)
    sent.messages.clear()
    model(torch.randn(2, 16)).sum().backward()
    assert sent.messages == []
