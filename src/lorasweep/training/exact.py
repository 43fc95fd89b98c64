"""Exact fast paths for a single LoRA layer fed by data: the same loss as the reference
``nn.functional.mse_loss(model(x), y)``, up to float rounding, at a fraction of the cost.

The frozen product W₀x does not depend on any trainable parameter, so it is folded into the
target once per dataset: r = y − W₀x (:func:`cache_base_residuals`). A LoRA step then fits
``b + s·B(Ax)`` to r chunk by chunk (:class:`ResidualLoss`), or, where every step sees the whole
split, from sufficient statistics (:class:`GramLoss`). :func:`cached_loss` picks between them.
The tests hold every path to 1e-5 of the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from lorasweep.models import registry
from lorasweep.models.lora import LoRALinear
from lorasweep.planning.cohorts import CHUNK_ELEMENTS
from lorasweep.planning.runs import RunSpec
from lorasweep.tasks import tutorial
from lorasweep.tasks.synthetic import Dataset

LossFn = Callable[..., float]
"""``loss(split, index=None, backward=False) -> float``: the mean squared error of a mini-batch
(``index`` rows of the split, or all of it); with ``backward`` its gradients accumulate into the
parameters' ``.grad``."""

SPLITS = ("train", "val")
TEST = "test"
"""The test split: evaluated once, on the final weights, never selected on."""
SOURCE = "source"
"""The source task's split, present where the dataset declares one: evaluated, never trained on."""
Splits = dict[str, tuple[torch.Tensor, torch.Tensor | None]]
"""Split name → (x, y); y is None where the job replaced it by the residual."""
Residuals = dict[str, torch.Tensor]
"""Split name → r = y − W₀x, cached once per dataset."""


def splits_of(tensors: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """The dataset's splits: train and val, then test and the source task's where it has them."""
    return SPLITS + tuple(split for split in (TEST, SOURCE) if f"X_{split}" in tensors)


def can_cache_base(model: nn.Module) -> bool:
    """Caching W₀x is exact when the model is one unmerged LoRA layer fed directly by data
    (no trainable layer before it, no dropout on the base path)."""
    return isinstance(model, LoRALinear) and model.method_record.additive and not model.merged


def trains_on_base_residuals(spec: RunSpec) -> bool:
    """Whether a run trains against r = y − W₀x of the dataset's own W₀: single-layer LoRA
    (no ``targets``) with any init but PiSSA, which moves part of W₀ into the adapter and so
    needs its own residual. A deep model's run never does: its frozen modules sit between
    trainable ones."""
    return spec.record.additive and not registry.replaces_base(spec.init) and spec.targets is None


def _row_chunks(n: int, width: int) -> Iterator[slice]:
    rows = max(1, CHUNK_ELEMENTS // max(width, 1))
    for lo in range(0, n, rows):
        yield slice(lo, min(lo + rows, n))


def _residual_chunks(
    x: torch.Tensor, y: torch.Tensor | None, w0: torch.Tensor, residual: torch.Tensor | None
) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, y[rows] − x[rows]·W₀ᵀ) over row chunks, read from ``residual`` where it is
    already computed. Every path computes a chunk the same way, so the result is bitwise the
    same whether it was cached per dataset or per run."""
    width = max(x.shape[1], (residual if residual is not None else y).shape[1])
    for rows in _row_chunks(x.shape[0], width):
        if residual is not None:
            yield rows, residual[rows]
        else:
            yield rows, y[rows] - x[rows] @ w0.T


@torch.no_grad()
def base_residual(
    x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, in_place: bool = False
) -> torch.Tensor:
    """r = y − W₀x, the target a LoRA layer's ``b + s·B(Ax)`` is fitted to, computed chunk by
    chunk into a new tensor or, with ``in_place``, over ``y``."""
    residual = y if in_place else torch.empty_like(y)
    for rows, chunk in _residual_chunks(x, y, w0, None):
        residual[rows] = chunk
    return residual


def cache_base_residuals(dataset: Dataset, specs: Sequence[RunSpec]) -> None:
    """Compute r = y − W₀x once per dataset for the runs that train on it (the frozen base
    output is a constant of each sample) and store it as ``r_train``/``r_val`` (and
    ``r_test``, ``r_source`` where the dataset has those splits).

    When no run in ``specs`` needs y or W₀ (full fine-tuning, PiSSA), r overwrites y in place
    and W₀ is released, so the job holds x and r only. The caller must own ``dataset``. A
    ``compat: tutorial`` dataset is left as it is: its runs use the reference loss.
    """
    users = [spec for spec in specs if trains_on_base_residuals(spec)]
    if not users or "r_train" in dataset.tensors or tutorial.is_tutorial(dataset.spec):
        return
    exclusive = len(users) == len(specs)
    for split in splits_of(dataset.tensors):
        residual = base_residual(
            dataset[f"X_{split}"], dataset[f"y_{split}"], dataset["W0"], in_place=exclusive
        )
        dataset.tensors[f"r_{split}"] = residual
        if exclusive:
            del dataset.tensors[f"y_{split}"]
    if exclusive:
        del dataset.tensors["W0"]


def _accumulate(param: torch.Tensor, grad: torch.Tensor, scale: float) -> None:
    """param.grad += scale·grad, as autograd accumulates."""
    if param.grad is None:
        param.grad = (grad * scale).contiguous()
    else:
        param.grad.add_(grad, alpha=scale)


class ResidualLoss:
    """The reference loss ``mse_loss(model(x), y)`` of a LoRA layer, computed against the
    residual of its frozen base product.

    Exact, up to float rounding, wherever :func:`can_cache_base` holds (one unmerged LoRA layer
    fed by data), for any mini-batch size, bias policy and dropout: ``W₀x + b + s·B(Ax)`` against
    y is ``b + s·B(Ax)`` against r = y − W₀x, at O(n·r·(d_in + d_out)) per epoch instead of
    O(n·d_in·d_out). A mini-batch is evaluated in row chunks whose gradients accumulate, so the
    prediction is never held whole; the dropout mask is drawn for the whole mini-batch at once, as
    the reference draws it.
    """

    def __init__(self, layer: LoRALinear, splits: Splits, residuals: Residuals | None = None):
        self.layer = layer
        self.splits = {
            name: (x, residuals[name] if residuals else base_residual(x, y, layer.base.weight))
            for name, (x, y) in splits.items()
        }

    @torch.no_grad()
    def __call__(self, split: str, index: torch.Tensor | None = None, backward: bool = False):
        """Mean squared error of ``b + s·B(A·x)`` against r over the mini-batch, chunk by chunk.

        With ``backward``, the gradients are formed in the same pass (as fused-loss kernels
        do, e.g. Liger-Kernel's fused linear cross-entropy) and added to ``.grad``. With
        e = s·UBᵀ + b − r and U = xAᵀ, the summed error ‖e‖² has ∂/∂B = 2s·eᵀU,
        ∂/∂A = 2s·(eB)ᵀx and ∂/∂b = 2·eᵀ1; each is divided by the element count.
        """
        layer = self.layer
        x, residual = self.splits[split]
        if index is not None:
            x, residual = x[index], residual[index]
        x = layer.adapter_input(x)
        a, b, bias, s = layer.lora_A, layer.lora_B, layer.base.bias, layer.scaling
        if backward:
            b_t = b.T.contiguous()
            grad_a = torch.zeros_like(a)
            # Bᵀ's gradient row-major (zeros_like(b.T) would copy Bᵀ's transposed strides, and
            # the accumulating products into a column-major output take twice as long)
            grad_bt = torch.zeros_like(b_t)
        bias_trains = backward and bias is not None and bias.requires_grad
        grad_bias = torch.zeros_like(bias) if bias_trains else None
        count = residual.numel()
        total = 0.0
        for rows in _row_chunks(x.shape[0], residual.shape[1]):
            x_rows = x[rows]
            u = (a @ x_rows.T).T  # U = xAᵀ formed as (A·xᵀ)ᵀ: MKL's skinny product is faster
            error = torch.addmm(residual[rows], u, b.T, beta=-1, alpha=s)
            if bias is not None:
                error += bias
            flat = error.view(-1)
            total += float(torch.dot(flat, flat))
            if backward:
                if grad_bt.is_cuda:  # cuBLASLt finds no algorithm for an in-place 1×n·n×d
                    grad_bt += u.T @ error
                else:
                    grad_bt.addmm_(u.T, error)
                grad_a.addmm_(b_t @ error.T, x_rows)  # x's rows are still in cache here
                if bias_trains:
                    grad_bias += error.sum(0)
        if backward:
            _accumulate(a, grad_a, 2 * s / count)
            _accumulate(b, grad_bt.T, 2 * s / count)
            if bias_trains:
                _accumulate(bias, grad_bias, 2 / count)
        return total / count


@torch.no_grad()
def gram_statistics(
    x: torch.Tensor,
    y: torch.Tensor | None,
    w0: torch.Tensor,
    residual: torch.Tensor | None,
    d_out: int,
) -> dict:
    """The sufficient statistics of a split for :class:`GramLoss`, in float64: Gₓₓ = XᵀX,
    Gᵣₓ = RᵀX, sₓ = Xᵀ1, sᵣ = Rᵀ1 and ‖R‖², accumulated over row chunks so that no n×d
    temporary is formed (R = y − W₀x, read from ``residual`` where it is cached)."""
    d_in = x.shape[1]
    gxx = torch.zeros(d_in, d_in, dtype=torch.float64, device=x.device)
    grx = torch.zeros(d_out, d_in, dtype=torch.float64, device=x.device)
    sx = torch.zeros(d_in, dtype=torch.float64, device=x.device)
    sr = torch.zeros(d_out, dtype=torch.float64, device=x.device)
    rr = torch.zeros((), dtype=torch.float64, device=x.device)
    for rows, rc in _residual_chunks(x, y, w0, residual):
        xc, rc = x[rows].double(), rc.double()
        gxx.addmm_(xc.T, xc)
        grx.addmm_(rc.T, xc)
        sx += xc.sum(0)
        sr += rc.sum(0)
        rr += rc.square().sum()
    return {"gxx": gxx, "grx": grx, "sx": sx, "sr": sr, "rr": rr,
            "count": x.shape[0] * d_out, "n": x.shape[0]}  # fmt: skip


def gram_sum_of_squares(
    stats: dict,
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None,
    s: float | torch.Tensor,
) -> torch.Tensor:
    """‖sXAᵀBᵀ + 1bᵀ − R‖² from a split's :func:`gram_statistics` (the formula of
    :class:`GramLoss`), in float64, differentiable in A, B and the bias. Takes one adapter
    (A r×d_in, B d_out×r, bias d_out, s a number) or a stack of them with a leading run
    dimension (s then a tensor of one scale per run), with statistics shared by the stack or
    stacked with it."""
    gram_a = (a @ stats["gxx"]) @ a.mT
    cross = stats["grx"] @ a.mT
    total = (
        s * s * (b * (b @ gram_a)).sum((-2, -1)) - 2 * s * (b * cross).sum((-2, -1)) + stats["rr"]
    )
    if bias is not None:
        b_ax = (b @ (a @ stats["sx"].unsqueeze(-1))).squeeze(-1)
        total = (
            total
            + 2 * s * (bias * b_ax).sum(-1)
            - 2 * (bias * stats["sr"]).sum(-1)
            + stats["n"] * bias.square().sum(-1)
        )
    return total


class GramLoss:
    """The reference loss ``mse_loss(model(x), y)`` of a LoRA layer over a whole split, from
    sufficient statistics, never forming n×d tensors.

    Exact, up to float rounding, where :func:`can_use_gram` holds: one unmerged LoRA layer fed
    by data, without dropout, every step seeing the whole split. With r = y − W₀x and
    prediction p = b + s·B(Ax), the summed squared error of a split is

        ‖sXAᵀBᵀ + 1bᵀ − R‖² = s²·⟨B, B·(AGₓₓAᵀ)⟩ − 2s·⟨B, GᵣₓAᵀ⟩ + 2s·bᵀB(A·sₓ)
                               − 2·bᵀsᵣ + n·‖b‖² + ‖R‖²

    where Gₓₓ = XᵀX, Gᵣₓ = RᵀX, sₓ = Xᵀ1, sᵣ = Rᵀ1 and ‖R‖² are accumulated once per split
    over row chunks, in float64: the terms nearly cancel near the optimum (with a signal 190×
    the noise, float32 statistics were off by 1.5e-5 relative), so they are also combined in
    float64. A full-batch step then costs O(r·d_in·(d_in + d_out)), whatever n is, and holds no
    n×d tensor.
    """

    def __init__(self, layer: LoRALinear, splits: Splits, residuals: Residuals | None = None):
        self.layer = layer
        self.stats = {
            name: gram_statistics(
                x, y, layer.base.weight, residuals[name] if residuals else None, layer.out_features
            )
            for name, (x, y) in splits.items()
        }

    def loss(self, split: str) -> torch.Tensor:
        layer = self.layer
        bias = layer.base.bias
        total = gram_sum_of_squares(
            self.stats[split],
            layer.lora_A.double(),
            layer.lora_B.double(),
            bias.double() if bias is not None else None,
            layer.scaling,
        )
        return (total / self.stats[split]["count"]).to(layer.lora_A.dtype)

    def __call__(self, split: str, index: torch.Tensor | None = None, backward: bool = False):
        if index is not None:
            raise ValueError("the sufficient statistics cover whole splits only")
        loss = self.loss(split)
        if backward:
            loss.backward()
        return float(loss.detach())


def can_use_gram(model: nn.Module, batch_size: int, n_train: int) -> bool:
    """The sufficient-statistics loss is exact for one unmerged LoRA layer fed by data, without
    dropout, when every step sees the whole training split. It is chosen only where its float64
    statistics are no larger than the float32 residual they replace, 2·d_in·(d_in + d_out) ≤
    n·d_out; a step is then also cheaper, r·d_in·(d_in + d_out) < r·n·(d_in + d_out)."""
    return (
        can_cache_base(model)
        and model.dropout == 0
        and batch_size >= n_train
        and 2 * model.in_features * (model.in_features + model.out_features)
        <= n_train * model.out_features
    )


def cached_loss(
    layer: LoRALinear, data: Splits, batch_size: int, residuals: Residuals | None = None
) -> LossFn:
    """An exact equivalent of the reference loss ``mse_loss(model(x), y)`` for a layer where
    :func:`can_cache_base` holds, the one that needs least time and memory: :class:`GramLoss`
    for the training split where :func:`can_use_gram` allows, otherwise :class:`ResidualLoss`
    against y − W₀x, taken from ``residuals`` (split → r, cached per dataset) or computed here
    (see :data:`LossFn`)."""
    n_train = data["train"][0].shape[0]
    gram = None
    if can_use_gram(layer, batch_size, n_train):
        gram = GramLoss(layer, {"train": data["train"]}, residuals)
    rows = ResidualLoss(
        layer, {k: v for k, v in data.items() if gram is None or k != "train"}, residuals
    )

    def loss(split: str, index: torch.Tensor | None = None, backward: bool = False) -> float:
        source = gram if gram is not None and split == "train" else rows
        return source(split, index, backward)

    return loss
