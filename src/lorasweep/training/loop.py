"""Train one run: LoRA or full fine-tuning of the dataset's base layer, with Adam and MSE.

Randomness comes from seeded generators, one per purpose, derived from the run's seed:
``init`` (adapter initialisation; shared by runs of the same seed and rank, so α, scaling and lr
comparisons are paired), ``shuffle`` (mini-batch order; shared by every run of the seed) and
``dropout``. The global RNG is never used.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from lorasweep.models.accounting import ParameterCounts, count_parameters, training_state_bytes
from lorasweep.models.lora import LoRALinear
from lorasweep.planning.runs import RunSpec
from lorasweep.seeding import generator
from lorasweep.tasks import tutorial
from lorasweep.tasks.synthetic import Dataset, GroundTruth
from lorasweep.training.devices import device_name, resolve_device
from lorasweep.training.exact import (
    SPLITS,
    LossFn,
    cached_loss,
    can_cache_base,
    trains_on_base_residuals,
)


def build_model(spec: RunSpec, dataset: Dataset, device: torch.device) -> nn.Module:
    """The dataset's base layer (W₀, b₀), wrapped in LoRA or left fully trainable.

    Full fine-tuning trains a copy of W₀. LoRA never writes to W₀ (PiSSA and merging replace
    the base weight instead), so it wraps the dataset's tensor itself: runs of one job share a
    single W₀ rather than holding one copy each. Where the job released W₀ after caching the
    residuals (:func:`cache_base_residuals`), the frozen weight is a meta tensor.
    """
    d_in, d_out = dataset.spec.in_features, dataset.spec.out_features
    full = spec.method == "full"
    base = nn.Linear(d_in, d_out, device="meta")
    if "W0" in dataset.tensors:
        base.weight = nn.Parameter(dataset["W0"].to(device, copy=full), requires_grad=full)
    elif not trains_on_base_residuals(spec):
        raise ValueError(f"{spec.run_id}: needs W₀, which this job released")
    base.bias = nn.Parameter(dataset["b0"].to(device, copy=True))
    if full:
        return base
    layer = LoRALinear(
        base,
        rank=spec.rank,
        alpha=spec.alpha,
        scaling=spec.scaling,
        init=spec.init,
        bias=spec.bias,
        dropout=spec.dropout,
        generator=generator(spec.seed, "init", spec.dataset, spec.rank),
        dropout_generator=generator(spec.seed, "dropout", spec.run_id),
        device=device,
    )
    if spec.init == "randn" and tutorial.is_tutorial(dataset.spec):
        tutorial.initialise_adapter(layer, dataset.spec)
    return layer


@dataclass
class RunResult:
    spec: RunSpec
    status: str
    diverged_epoch: int | None
    epochs: list[dict]
    counts: ParameterCounts
    train_state_bytes: int
    tensors: dict[str, torch.Tensor] = field(repr=False)
    device: str
    device_name: str
    epoch_seconds: list[float]
    cached_base: bool
    scaling: float | None = None
    base_weight: torch.Tensor | None = field(default=None, repr=False)
    """The frozen weight a PiSSA adapter was trained against (W₀ − s·B₀A₀); None otherwise."""

    @property
    def final(self) -> dict:
        return self.epochs[-1]

    @property
    def best_val_loss(self) -> float:
        finite = [e["val_loss"] for e in self.epochs if math.isfinite(e["val_loss"])]
        return min(finite) if finite else math.nan

    def summary(self, truth: GroundTruth | None) -> dict:
        """Per-run metrics as stored in ``metrics.json`` (no wall-clock times)."""
        spec = self.spec
        optimal = noise = gap = None
        if truth is not None:
            rank = spec.rank if spec.method == "lora" else None
            bias_trains = spec.method == "full" or spec.bias == "all"
            optimal = truth.optimal_loss(rank, bias_trains)
            noise = truth.noise_floor
            if self.status == "ok":
                gap = self.final["val_loss"] / optimal - 1.0
        return {
            **spec.as_dict(),
            "trainable_params": self.counts.trainable,
            "frozen_params": self.counts.frozen,
            "total_params": self.counts.total,
            "adapter_params": self.counts.adapter,
            "train_state_bytes": self.train_state_bytes,
            "final_train_loss": self.final["train_loss"],
            "final_val_loss": self.final["val_loss"],
            "best_val_loss": self.best_val_loss,
            "initial_val_loss": self.epochs[0]["val_loss"],
            "status": self.status,
            "diverged_epoch": self.diverged_epoch,
            "optimal_val_loss": optimal,
            "noise_floor": noise,
            "gap_to_optimal": gap,
            "device_type": self.device,
            "cached_base": self.cached_base,
        }


def _grad_norm(param: torch.Tensor) -> float:
    return float(param.grad.norm()) if param.grad is not None else 0.0


def train_run(
    spec: RunSpec,
    dataset: Dataset,
    device: torch.device | None = None,
    use_cache: bool | None = None,
) -> RunResult:
    """Train one run and return its per-epoch record, counts and final weights.

    Epoch 0 is the model before any step. For epoch ≥ 1, ``train_loss`` is the sample-weighted
    mean of the epoch's mini-batch losses and ``val_loss`` the loss on the whole validation split
    after the epoch. A non-finite loss stops the run with ``status="diverged"``.
    ``use_cache=None`` caches W₀x wherever :func:`can_cache_base` says it is exact, except on a
    ``compat: tutorial`` dataset, whose runs compute the tutorial's float32 loss; residuals
    the job cached in ``dataset`` (:func:`cache_base_residuals`) are used rather than recomputed.
    """
    device = device if device is not None else resolve_device(spec.device)
    model = build_model(spec, dataset, device)
    if use_cache is None:
        use_cache = can_cache_base(model) and not tutorial.is_tutorial(dataset.spec)
    elif use_cache and not can_cache_base(model):
        raise ValueError("W₀x can only be cached for a single unmerged LoRA layer")

    tensors = dataset.tensors
    data = {
        split: (
            tensors[f"X_{split}"].to(device),
            tensors[f"y_{split}"].to(device) if f"y_{split}" in tensors else None,
        )
        for split in SPLITS
    }
    residuals = None
    if use_cache and trains_on_base_residuals(spec) and "r_train" in tensors:
        residuals = {split: tensors[f"r_{split}"].to(device) for split in SPLITS}
    elif data["train"][1] is None:
        raise ValueError(f"{spec.run_id}: needs the targets y, which this job replaced by y − W₀x")
    n_train = data["train"][0].shape[0]
    batch = min(spec.batch_size or n_train, n_train)
    shuffled = batch < n_train
    fast_loss = cached_loss(model, data, batch, residuals) if use_cache else None

    def direct_loss(split: str, index: torch.Tensor | None = None, backward: bool = False):
        x, y = data[split]
        if index is not None:
            x, y = x[index], y[index]
        loss = nn.functional.mse_loss(model(x), y)
        if backward:
            loss.backward()
        return float(loss.detach())

    loss_on: LossFn = fast_loss if fast_loss is not None else direct_loss

    def evaluate(split: str) -> float:
        model.eval()
        with torch.no_grad():
            return loss_on(split)

    if spec.method == "lora":
        groups = [
            {"params": [model.lora_A], "lr": spec.lr},
            {"params": [model.lora_B], "lr": spec.lr * spec.lr_ratio},
        ]
        if spec.bias == "all":
            groups.append({"params": [model.base.bias], "lr": spec.lr})
        norm_params = {"grad_norm_A": model.lora_A, "grad_norm_B": model.lora_B}
    else:
        groups = [{"params": list(model.parameters()), "lr": spec.lr}]
        norm_params = {"grad_norm_W": model.weight}
    optimizer = torch.optim.Adam(groups)

    shuffle = generator(spec.seed, "shuffle", spec.dataset)
    nan = math.nan
    epochs = [
        {
            "epoch": 0,
            "train_loss": evaluate("train"),
            "val_loss": evaluate("val"),
            **dict.fromkeys(norm_params, nan),
        }
    ]
    epoch_seconds: list[float] = []
    status, diverged_epoch = "ok", None
    for epoch in range(1, spec.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(n_train, generator=shuffle).to(device) if shuffled else None
        loss_sum, norm_sums, steps = 0.0, dict.fromkeys(norm_params, 0.0), 0
        for lo in range(0, n_train, batch):
            index = order[lo : lo + batch] if order is not None else None
            size = min(batch, n_train - lo)
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss_on("train", index, backward=True)
            loss_sum += loss_value * size
            if not math.isfinite(loss_value):
                break
            for name, param in norm_params.items():
                norm_sums[name] += _grad_norm(param)
            optimizer.step()
            steps += 1
        val_loss = evaluate("val") if math.isfinite(loss_sum) else nan
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_seconds.append(time.perf_counter() - start)
        epochs.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / n_train if math.isfinite(loss_sum) else nan,
                "val_loss": val_loss,
                **{name: total / max(steps, 1) for name, total in norm_sums.items()},
            }
        )
        if not (math.isfinite(loss_sum) and math.isfinite(val_loss)):
            status, diverged_epoch = "diverged", epoch
            break

    if spec.method == "lora":
        tensors = {"lora_A": model.lora_A, "lora_B": model.lora_B}
        if spec.bias == "all":
            tensors["bias"] = model.base.bias
    else:
        tensors = {"weight": model.weight, "bias": model.bias}
    return RunResult(
        spec=spec,
        status=status,
        diverged_epoch=diverged_epoch,
        epochs=epochs,
        counts=count_parameters(model),
        train_state_bytes=training_state_bytes(model, optimizer),
        tensors={k: v.detach().cpu() for k, v in tensors.items()},
        device=device.type,
        device_name=device_name(device),
        epoch_seconds=epoch_seconds,
        cached_base=fast_loss is not None,
        scaling=model.scaling if spec.method == "lora" else None,
        base_weight=model.base.weight.detach().cpu() if spec.init == "pissa" else None,
    )
