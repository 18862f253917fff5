"""Fold-batched training on CUDA (lightning_modules/fold_batch_module.py): the vmapped step on the GPU gives
each fold the loss, the gradients and the BatchNorm statistics that the CPU gives it.

The expectations come from the CPU, folds one after another on views of the stacked tensors (the
path the CPU tests check against each fold's sequential model), never from the CUDA path itself.
TF32 is switched off so that the GPU computes in float32 like the CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from lightning_modules import MEDN, STSTNet
from lightning_modules.base import MERClassifier
from lightning_modules.fold_batch_module import FoldBatch

pytestmark = pytest.mark.gpu

FOLDS = 3
MEDN_SMALL = {"image_size": 72, "patch_size": 18, "embed_dim": 16, "num_heads": 2, "num_aus": 5,
              "sparse_rates": [1, 2, 4]}


def ststnet_batch(seed: int, b: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"apex_flow": torch.randn(b, 3, 28, 28, generator=g), "label": torch.randint(0, 3, (b,), generator=g),
            "index": torch.arange(b)}


def medn_batch(seed: int, b: int = 4, t: int = 8, size: int = 72) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    flow = torch.randn(b, t - 1, 2, size, size, generator=g)
    return {"flow": flow, "apex_flow": flow[:, -1], "frames": torch.rand(b, t, 3, size, size, generator=g),
            "au": (torch.rand(b, 5, generator=g) > 0.5).float(), "au_mask": torch.tensor([True, True, False, True]),
            "label": torch.randint(0, 3, (b,), generator=g), "index": torch.arange(b)}


MODELS: dict[str, tuple[Callable[[], MERClassifier], Callable[[int], dict[str, torch.Tensor]]]] = {
    "ststnet": (lambda: STSTNet(num_classes=3), ststnet_batch),
    "medn": (lambda: MEDN(num_classes=3, **MEDN_SMALL), medn_batch),
}


@pytest.fixture(autouse=True)
def float32_on_the_gpu() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def fold_models(build: Callable[[], MERClassifier]) -> list[MERClassifier]:
    """One model per fold, each with its own initial weights (seed k, as its sequential job), without
    dropout so that a training-mode step is deterministic on both devices."""
    models = []
    for k in range(FOLDS):
        torch.manual_seed(k)
        model = build()
        for module in model.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.p = 0.0
        models.append(model)
    return models


def stacked(make: Callable[[int], dict[str, torch.Tensor]], device: str) -> dict[str, torch.Tensor]:
    """Every fold its own batch, values (F, B, ...)."""
    per_fold = [make(100 + k) for k in range(FOLDS)]
    return {key: torch.stack([b[key] for b in per_fold]).to(device) for key in per_fold[0]}


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float = 1e-3) -> None:
    """Float32 agreement relative to the tensor's own scale (reduction orders differ between devices)."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual.cpu(), expected, rtol=rtol, atol=rtol * 0.1 * max(scale, 1e-6), msg=what)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_vmapped_cuda_step_gives_each_fold_its_cpu_loss_gradients_and_statistics(name: str) -> None:
    """One training-mode step: every fold's loss, the gradients in its slice of the stacked weights and
    its BatchNorm running statistics (from its own batch only) as the CPU computes them."""
    build, make = MODELS[name]
    models = fold_models(build)
    cpu = FoldBatch(copy.deepcopy(models), None, vectorize=False).train()
    gpu = FoldBatch(copy.deepcopy(models), None, vectorize=True).train().cuda()
    expected, _ = cpu.fold_losses(stacked(make, "cpu"))
    actual, _ = gpu.fold_losses(stacked(make, "cuda"))
    assert actual.device.type == "cuda"
    assert len({round(float(v), 4) for v in expected.detach()}) == FOLDS  # three different folds, not one repeated
    assert_close_scaled(actual.detach(), expected.detach(), f"{name}: fold losses")
    expected.sum().backward()
    actual.sum().backward()
    on_gpu = dict(gpu.named_parameters())
    with_gradient = [(n, p) for n, p in cpu.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(with_gradient) > 0.5 * len(list(cpu.parameters())), f"{name}: few parameters had gradients"
    for param_name, param in with_gradient:
        for i in range(FOLDS):
            # 1 %: a few gradients are small sums of large terms (LED's log_alpha: 0.2 % apart between
            # vmap and the loop on the CPU alone); a fold's slice mixed with another's is off by far more
            assert_close_scaled(on_gpu[param_name].grad[i], param.grad[i], f"{name}: fold {i} gradient of {param_name}",
                                rtol=1e-2)
    buffers = dict(gpu.named_buffers())
    running = [(n, b) for n, b in cpu.named_buffers() if "running" in n]
    assert running, f"{name}: no BatchNorm statistics to compare"
    for buffer_name, value in running:
        assert not torch.equal(value[0], value[1]), f"{name}: {buffer_name} of folds 0 and 1 saw different batches"
        assert_close_scaled(buffers[buffer_name], value, f"{name}: running statistics {buffer_name}")
