"""Train one run: LoRA or full fine-tuning of the dataset's base layer, with Adam and MSE.

Randomness comes from seeded generators, one per purpose, derived from the run's seed:
``init`` (adapter initialisation; shared by runs of the same seed and rank, so α, scaling and lr
comparisons are paired), ``shuffle`` (mini-batch order; shared by every run of the seed) and
``dropout``. The global RNG is never used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from lorasweep.accounting import ParameterCounts, count_parameters, training_state_bytes
from lorasweep.choices import DEVICES
from lorasweep.datasets import Dataset, GroundTruth
from lorasweep.lora import LoRALinear
from lorasweep.plan import RunSpec
from lorasweep.seeding import generator


class DeviceUnavailableError(RuntimeError):
    """The config asks for a device this machine does not have."""


def resolve_device(requested: str) -> torch.device:
    """``cpu``, ``cuda`` (an error if CUDA is missing) or ``auto`` (CUDA if present, else CPU)."""
    if requested not in DEVICES:
        raise ValueError(
            f"train.device: unknown device {requested!r}; allowed: {', '.join(DEVICES)}"
        )
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "train.device is 'cuda' but CUDA is not available on this machine "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False); "
            "set train.device to 'auto' or 'cpu'"
        )
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def build_model(spec: RunSpec, dataset: Dataset, device: torch.device) -> nn.Module:
    """The dataset's base layer (W₀, b₀), wrapped in LoRA or left fully trainable."""
    d_out, d_in = dataset["W0"].shape
    base = nn.utils.skip_init(nn.Linear, d_in, d_out, device=device)
    with torch.no_grad():
        base.weight.copy_(dataset["W0"])
        base.bias.copy_(dataset["b0"])
    if spec.method == "full":
        return base
    return LoRALinear(
        base,
        rank=spec.rank,
        alpha=spec.alpha,
        scaling=spec.scaling,
        init=spec.init,
        bias=spec.bias,
        dropout=spec.dropout,
        generator=generator(spec.seed, "init", spec.dataset, spec.rank),
        dropout_generator=generator(spec.seed, "dropout", spec.run_id),
    ).to(device)


class CachedBaseForward:
    """Train a LoRA layer fed by data against the residual of its frozen base product.

    W₀x does not depend on any trainable parameter, so for each split it is computed once and
    folded into the target: r = y − W₀x. A step then predicts ``b + s·B(Ax)`` and compares it
    with r, which is the same loss as ``W₀x + b + s·B(Ax)`` against y up to float rounding, at
    O(n·r·(d_in + d_out)) per epoch instead of O(n·d_in·d_out), holding one n×d_out tensor
    instead of two.
    """

    def __init__(self, layer: LoRALinear, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        self.layer = layer
        with torch.no_grad():
            self.residuals = {name: y - x @ layer.base.weight.T for name, (x, y) in splits.items()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output minus W₀x."""
        out = self.layer.adapter_output(x)
        if self.layer.base.bias is not None:
            out = out + self.layer.base.bias
        return out

    def target(self, split: str, index: torch.Tensor | None) -> torch.Tensor:
        residual = self.residuals[split]
        return residual if index is None else residual[index]


class GramLoss:
    """Full-batch MSE of a LoRA layer from sufficient statistics, never forming n×d tensors.

    With r = y − W₀x and prediction p = b + s·B(Ax), the summed squared error of a split is

        ‖sXAᵀBᵀ + 1bᵀ − R‖² = s²·⟨B, B·(AGₓₓAᵀ)⟩ − 2s·⟨B, GᵣₓAᵀ⟩ + 2s·bᵀB(A·sₓ)
                               − 2·bᵀsᵣ + n·‖b‖² + ‖R‖²

    where Gₓₓ = XᵀX, Gᵣₓ = RᵀX, sₓ = Xᵀ1, sᵣ = Rᵀ1 and ‖R‖² are accumulated once per split
    over row chunks (the vectors and ‖R‖² in float64). A full-batch step then costs
    O(r·d_in·(d_in + d_out)), whatever n is, and holds no n×d tensor. The terms, which nearly
    cancel near the optimum, are combined in float64. Valid for one LoRA layer fed by data,
    without dropout, with one batch per epoch.
    """

    CHUNK_ROWS = 512

    def __init__(self, layer: LoRALinear, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        self.layer = layer
        self.stats = {name: self._statistics(x, y) for name, (x, y) in splits.items()}

    @torch.no_grad()
    def _statistics(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        """Accumulate the statistics over row chunks, so that no n×d temporary is formed."""
        w0 = self.layer.base.weight
        d_in, d_out = x.shape[1], y.shape[1]
        gxx = torch.zeros(d_in, d_in, dtype=x.dtype, device=x.device)
        grx = torch.zeros(d_out, d_in, dtype=x.dtype, device=x.device)
        sx = torch.zeros(d_in, dtype=torch.float64, device=x.device)
        sr = torch.zeros(d_out, dtype=torch.float64, device=x.device)
        rr = torch.zeros((), dtype=torch.float64, device=x.device)
        for lo in range(0, x.shape[0], self.CHUNK_ROWS):
            xc = x[lo : lo + self.CHUNK_ROWS]
            rc = y[lo : lo + self.CHUNK_ROWS] - xc @ w0.T
            gxx.addmm_(xc.T, xc)
            grx.addmm_(rc.T, xc)
            sx += xc.sum(0, dtype=torch.float64)
            sr += rc.sum(0, dtype=torch.float64)
            rr += rc.double().square().sum()
        return {"gxx": gxx, "grx": grx, "sx": sx, "sr": sr, "rr": rr,
                "count": x.shape[0] * d_out, "n": x.shape[0]}  # fmt: skip

    def loss(self, split: str) -> torch.Tensor:
        st, layer = self.stats[split], self.layer
        s, a, b = layer.scaling, layer.lora_A, layer.lora_B
        gram_a = (a @ st["gxx"]) @ a.T
        cross = st["grx"] @ a.T
        b64 = b.double()
        total = (
            s * s * (b64 * (b64 @ gram_a.double())).sum()
            - 2 * s * (b64 * cross.double()).sum()
            + st["rr"]
        )
        bias = layer.base.bias
        if bias is not None:
            c = bias.double()
            ax = a.double() @ st["sx"]
            total = total + 2 * s * c @ (b64 @ ax) - 2 * c @ st["sr"] + st["n"] * c.square().sum()
        return (total / st["count"]).to(a.dtype)


def can_use_gram(model: nn.Module, batch: int, n_train: int) -> bool:
    """The sufficient-statistics loss is exact for one unmerged LoRA layer fed by data, without
    dropout, when every step sees the whole training split; it pays off when the split has at
    least as many rows as the layer has inputs (else the d_in×d_in statistics outweigh it)."""
    return (
        can_cache_base(model)
        and model.dropout == 0
        and batch >= n_train
        and n_train >= model.in_features
    )


def cached_loss(
    layer: LoRALinear, data: dict[str, tuple[torch.Tensor, torch.Tensor]], batch: int
) -> Callable[[str, torch.Tensor | None], torch.Tensor]:
    """The fastest exact loss for a LoRA layer fed by data: from sufficient statistics when
    every step sees the whole training split (and there is no dropout), otherwise against the
    cached residual y − W₀x. Returns ``loss(split, index)``; ``index`` selects a mini-batch."""
    n_train = data["train"][0].shape[0]
    gram = None
    if can_use_gram(layer, batch, n_train):
        gram = GramLoss(layer, {"train": data["train"]})
    cache = CachedBaseForward(
        layer, {k: v for k, v in data.items() if gram is None or k != "train"}
    )

    def loss(split: str, index: torch.Tensor | None = None) -> torch.Tensor:
        if gram is not None and split == "train":
            return gram.loss(split)
        x = data[split][0] if index is None else data[split][0][index]
        return nn.functional.mse_loss(cache.predict(x), cache.target(split, index))

    return loss


def can_cache_base(model: nn.Module) -> bool:
    """Caching W₀x is exact when the model is one unmerged LoRA layer fed directly by data
    (no trainable layer before it, no dropout on the base path)."""
    return isinstance(model, LoRALinear) and not model.merged


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
    ``use_cache=None`` caches W₀x wherever :func:`can_cache_base` says it is exact.
    """
    device = device if device is not None else resolve_device(spec.device)
    model = build_model(spec, dataset, device)
    if use_cache is None:
        use_cache = can_cache_base(model)
    elif use_cache and not can_cache_base(model):
        raise ValueError("W₀x can only be cached for a single unmerged LoRA layer")

    data = {
        split: (dataset[f"X_{split}"].to(device), dataset[f"y_{split}"].to(device))
        for split in ("train", "val")
    }
    n_train = data["train"][0].shape[0]
    batch = min(spec.batch_size or n_train, n_train)
    shuffled = batch < n_train
    fast_loss = cached_loss(model, data, batch) if use_cache else None

    def loss_on(split: str, index: torch.Tensor | None = None) -> torch.Tensor:
        if fast_loss is not None:
            return fast_loss(split, index)
        x, y = data[split]
        if index is not None:
            x, y = x[index], y[index]
        return nn.functional.mse_loss(model(x), y)

    def evaluate(split: str) -> float:
        model.eval()
        with torch.no_grad():
            return float(loss_on(split))

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
            loss = loss_on("train", index)
            loss_value = float(loss.detach())
            loss_sum += loss_value * size
            if not math.isfinite(loss_value):
                break
            loss.backward()
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
    )
