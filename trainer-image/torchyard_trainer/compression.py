"""Model compression: magnitude pruning and knowledge distillation, with honest size accounting.

Pruning leaves torch's masks attached (``weight_orig`` * ``weight_mask``), so fine-tuning after it
cannot bring a pruned weight back; :func:`finalize_pruning` makes the zeros permanent before the
model is exported. Sizes are reported twice: dense (what model.pt stores) and as a CSR encoding of
the pruned weights, which is what a sparse runtime would need and is only smaller at high sparsity.
"""

from __future__ import annotations

import copy
import logging
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

log = logging.getLogger(__name__)

GLOBAL_UNSTRUCTURED = "global-unstructured"
STRUCTURED_CHANNEL = "structured-channel"
METHODS = (GLOBAL_UNSTRUCTURED, STRUCTURED_CHANNEL)
PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_ORIG = "_orig"
_MASK = "_mask"


def _prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear and convolution layers, in registration order (the output layer last)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]


def _effective(module: nn.Module, name: str) -> torch.Tensor:
    """A parameter as the forward pass sees it: the original times its mask, if pruned."""
    mask = getattr(module, name + _MASK, None)
    if mask is not None:
        return (getattr(module, name + _ORIG) * mask).detach()
    return getattr(module, name).detach()


def _effective_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor]]:
    """(qualified name, module, local name, tensor) of every parameter with masks applied."""
    for prefix, module in model.named_modules():
        for local, _ in module.named_parameters(recurse=False):
            if local.endswith(_ORIG) and hasattr(module, local[: -len(_ORIG)] + _MASK):
                local = local[: -len(_ORIG)]
            qualified = f"{prefix}.{local}" if prefix else local
            yield qualified, module, local, _effective(module, local)


def is_pruned(model: nn.Module) -> bool:
    """Whether any pruning mask is still attached."""
    return prune.is_pruned(model)


def _sparsity(tensors: list[torch.Tensor]) -> float:
    total = sum(t.numel() for t in tensors)
    zeros = sum(t.numel() - int(torch.count_nonzero(t)) for t in tensors)
    return zeros / total if total else 0.0


def measured_sparsity(model: nn.Module) -> float:
    """Fraction of zero entries over all Linear/Conv weights, masks applied."""
    return _sparsity([_effective(m, "weight") for _, m in _prunable_layers(model)])


def _csr_bytes(tensor: torch.Tensor) -> int:
    """Bytes of a CSR encoding (rows = output channels) with 32-bit indices where they fit."""
    rows = tensor.shape[0]
    nnz = int(torch.count_nonzero(tensor))
    index_bytes = 4 if tensor.numel() < 2**31 else 8
    return nnz * (tensor.element_size() + index_bytes) + (rows + 1) * index_bytes


def model_size_bytes(model: nn.Module, sparse: bool = False) -> int:
    """Bytes of the model's parameters and buffers (masks excluded).

    With ``sparse=True`` the Linear/Conv weights are counted in CSR form and everything else
    dense, which is the size a sparse runtime would hold.
    """
    size = 0
    for _, module, local, tensor in _effective_parameters(model):
        if sparse and local == "weight" and isinstance(module, PRUNABLE_TYPES):
            size += _csr_bytes(tensor)
        else:
            size += tensor.numel() * tensor.element_size()
    for name, buffer in model.named_buffers():
        if not name.endswith(_MASK):
            size += buffer.numel() * buffer.element_size()
    return size


def _check_request(method: str, sparsity: float | None, threshold: float | None) -> None:
    if method not in METHODS:
        raise ValueError(f"pruning method {method!r} is not one of {', '.join(METHODS)}")
    if (sparsity is None) == (threshold is None):
        raise ValueError("pruning needs exactly one of sparsity or threshold")
    if sparsity is not None and not 0.0 <= sparsity < 1.0:
        raise ValueError(f"pruning sparsity {sparsity} must be in [0, 1)")
    if threshold is not None and threshold < 0:
        raise ValueError(f"pruning threshold {threshold} must not be negative")


def _prune_global(layers: list[tuple[str, nn.Module]], sparsity: float | None, threshold: float | None) -> None:
    if sparsity is not None:
        total = sum(m.weight.numel() for _, m in layers)
        # An integer amount makes torch prune exactly that many entries, the smallest by |w|.
        prune.global_unstructured(
            [(m, "weight") for _, m in layers],
            pruning_method=prune.L1Unstructured,
            amount=round(sparsity * total),
        )
        return
    for _, module in layers:
        prune.custom_from_mask(module, "weight", mask=(module.weight.detach().abs() >= threshold).float())


def _prune_channels(module: nn.Module, sparsity: float | None, threshold: float | None) -> None:
    """Zero whole output channels (rows) of one layer by L2 norm, and their biases with them."""
    if sparsity is not None:
        prune.ln_structured(module, "weight", amount=round(sparsity * module.weight.shape[0]), n=2, dim=0)
    else:
        norms = module.weight.detach().flatten(1).norm(p=2, dim=1)
        keep = (norms >= threshold).to(module.weight.dtype)
        prune.custom_from_mask(module, "weight", mask=keep.view(-1, *[1] * (module.weight.dim() - 1)).expand_as(module.weight))
    if module.bias is not None:
        # A channel whose bias survives still emits a constant, so it could not be removed.
        alive = module.weight_mask.flatten(1).amax(dim=1)
        prune.custom_from_mask(module, "bias", mask=alive)


def apply_pruning(
    model: nn.Module, method: str, sparsity: float | None = None, threshold: float | None = None
) -> dict:
    """Prune ``model`` in place to ``sparsity`` (a fraction) or by magnitude ``threshold``.

    ``global-unstructured`` ranks every Linear/Conv weight together by |w| and zeroes exactly
    round(sparsity * total) of them. ``structured-channel`` zeroes, in each layer except the output
    layer (whose channels are the model's outputs), round(sparsity * channels) output channels of
    smallest L2 norm. Masks stay attached until :func:`finalize_pruning`. Returns a report for the
    artifact's lineage.
    """
    _check_request(method, sparsity, threshold)
    if is_pruned(model):
        raise ValueError("model already carries pruning masks; call finalize_pruning first")
    layers = _prunable_layers(model)
    if method == STRUCTURED_CHANNEL:
        layers = layers[:-1]
    if not layers:
        raise ValueError(f"model has no Linear or Conv layer that {method} can prune")
    if method == GLOBAL_UNSTRUCTURED:
        _prune_global(layers, sparsity, threshold)
    else:
        for _, module in layers:
            _prune_channels(module, sparsity, threshold)
    report = pruning_report(model, method, [f"{name}.weight" for name, _ in layers], sparsity, threshold)
    log.info("pruned %s: sparsity %.4f over %s", method, report["measuredSparsity"], report["prunedParameters"])
    return report


def pruning_report(
    model: nn.Module, method: str, pruned: list[str], sparsity: float | None, threshold: float | None
) -> dict:
    """What pruning did, in the camelCase shape recorded under the artifact's lineage."""
    weights = {name: tensor for name, _, _, tensor in _effective_parameters(model)}
    all_params = list(weights.values())
    return {
        "method": method,
        "requestedSparsity": sparsity,
        "threshold": threshold,
        "measuredSparsity": _sparsity([weights[name] for name in pruned]),
        "modelSparsity": measured_sparsity(model),
        "prunedParameters": pruned,
        "parameters": sum(t.numel() for t in all_params),
        "nonzeroParameters": sum(int(torch.count_nonzero(t)) for t in all_params),
        "denseSizeBytes": model_size_bytes(model),
        "sparseSizeBytes": model_size_bytes(model, sparse=True),
    }


def finalize_pruning(model: nn.Module) -> int:
    """Fold every attached mask into its parameter, making the zeros permanent; return how many."""
    folded = 0
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
                folded += 1
    return folded


def finalized_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every mask folded in; the original keeps its masks.

    A pruned module holds its masked weight as a computed (non-leaf) tensor, which deepcopy
    refuses; it is detached first, and the next forward pass recomputes it as usual.
    """
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                setattr(module, hook._tensor_name, getattr(module, hook._tensor_name).detach())
    clone = copy.deepcopy(model)
    finalize_pruning(clone)
    return clone


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton's loss: alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y).

    The T^2 factor keeps the soft term's gradients on the scale of the hard term's as T grows;
    the teacher's logits are treated as constants.
    """
    if temperature <= 0:
        raise ValueError(f"distillation temperature {temperature} must be positive")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation alpha {alpha} must be in [0, 1]")
    soft_student = F.log_softmax(student_logits / temperature, dim=1)
    soft_teacher = F.softmax(teacher_logits.detach() / temperature, dim=1)
    kd = F.kl_div(soft_student, soft_teacher, reduction="batchmean") * temperature**2
    ce = F.cross_entropy(student_logits, targets)
    return alpha * kd + (1.0 - alpha) * ce
