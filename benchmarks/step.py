"""Step and epoch time of one adapted layer: this project's LoRA (cached and uncached), loralib,
PEFT, full fine-tuning, and two lower bounds: one frozen base forward product alone, and one pass
over X (``read_x``: the memory-bandwidth floor of any epoch that must read the inputs).

An epoch is N_TRAIN samples in mini-batches of ``batch`` (shuffled when there is more than one
batch), each step a forward, MSE backward and Adam step, as in lorasweep.training. The cached
variant is lorasweep.training.cached_loss, as training uses it: against r = y − W₀x computed once
per dataset, or, when one batch covers the whole split and the statistics are no larger than r,
from the sufficient statistics XᵀX and RᵀX (the one-time cost is reported as ``setup_s``); all
others recompute W₀x every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import torch
from torch import nn

from benchmarks.common import repeat, summary
from lorasweep.models.lora import LoRALinear
from lorasweep.training.exact import cached_loss

SHAPES = [(64, 10), (1024, 1024), (4096, 4096)]
RANKS = [4, 8, 64]
BATCHES = [256, 4096]
N_TRAIN = 4096
VARIANTS = ["ours_cached", "ours_uncached", "loralib", "peft", "full_ft", "base_forward", "read_x"]
BOUNDS = ("base_forward", "read_x")


def _data(d_in: int, d_out: int):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN, d_in, generator=gen)
    y = torch.randn(N_TRAIN, d_out, generator=gen)
    w0 = torch.randn(d_out, d_in, generator=gen) / math.sqrt(d_in)
    b0 = torch.zeros(d_out)
    return x, y, w0, b0


def _base(w0: torch.Tensor, b0: torch.Tensor) -> nn.Linear:
    layer = nn.utils.skip_init(nn.Linear, w0.shape[1], w0.shape[0])
    with torch.no_grad():
        layer.weight.copy_(w0)
        layer.bias.copy_(b0)
    return layer


def build(variant: str, rank: int, w0, b0, x, y, batch: int):
    """(backward_of_batch(index), parameters to train, one-time setup seconds) for a variant:
    ``backward_of_batch`` computes a batch's MSE and accumulates its gradients."""
    import time

    start = time.perf_counter()
    setup = 0.0
    if variant in ("ours_cached", "ours_uncached"):
        layer = LoRALinear(_base(w0, b0), rank=rank, alpha=2 * rank, init="kaiming",
                           generator=torch.Generator().manual_seed(1))  # fmt: skip
        params = [layer.lora_A, layer.lora_B]
        if variant == "ours_cached":
            fast = cached_loss(layer, {"train": (x, y)}, batch)
            setup = time.perf_counter() - start
            return (lambda index: fast("train", index, backward=True)), params, setup
        model = layer
    elif variant == "loralib":
        import loralib

        model = loralib.Linear(w0.shape[1], w0.shape[0], r=rank, lora_alpha=2 * rank)
        with torch.no_grad():
            model.weight.copy_(w0)
            model.bias.copy_(b0)
        loralib.mark_only_lora_as_trainable(model)
        params = [p for p in model.parameters() if p.requires_grad]
    elif variant == "peft":
        from peft import LoraConfig, inject_adapter_in_model

        model = nn.Sequential(_base(w0, b0))
        config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["0"])
        model = inject_adapter_in_model(config, model)
        params = [p for p in model.parameters() if p.requires_grad]
    elif variant == "full_ft":
        model = _base(w0, b0)
        params = list(model.parameters())
    else:
        raise ValueError(variant)

    def backward(index):
        xb, yb = (x, y) if index is None else (x[index], y[index])
        nn.functional.mse_loss(model(xb), yb).backward()

    return backward, params, setup


def trainer(backward: Callable, params: list, batch: int):
    optimizer = torch.optim.Adam(params, lr=1e-3)
    gen = torch.Generator().manual_seed(2)

    def step(index=None):
        optimizer.zero_grad(set_to_none=True)
        backward(index)
        optimizer.step()

    def epoch():
        if batch >= N_TRAIN:
            step(None)
            return
        order = torch.randperm(N_TRAIN, generator=gen)
        for lo in range(0, N_TRAIN, batch):
            step(order[lo : lo + batch])

    first = torch.arange(min(batch, N_TRAIN)) if batch < N_TRAIN else None
    return (lambda: step(first)), epoch


def run(
    shapes=SHAPES, ranks=RANKS, batches=BATCHES, variants=VARIANTS, budget_s=15.0
) -> pd.DataFrame:
    rows = []
    for d_in, d_out in shapes:
        x, y, w0, b0 = _data(d_in, d_out)
        for batch in batches:
            for rank in ranks:
                if rank > min(d_in, d_out):
                    continue
                for variant in variants:
                    rank_free = variant in ("full_ft", *BOUNDS)
                    if rank_free and rank != min(r for r in ranks if r <= min(d_in, d_out)):
                        continue
                    row = {"d_in": d_in, "d_out": d_out, "rank": None if rank_free else rank,
                           "batch": batch, "variant": variant}  # fmt: skip
                    if variant == "read_x":
                        epoch_times = repeat(x.sum, repeats=7, budget_s=budget_s)
                        step_times = [t / math.ceil(N_TRAIN / batch) for t in epoch_times]
                        setup = 0.0
                    elif variant == "base_forward":
                        index = torch.arange(min(batch, N_TRAIN))

                        def forward(index=index, x=x, w0=w0, b0=b0):
                            with torch.no_grad():
                                return x[index] @ w0.T + b0

                        steps = math.ceil(N_TRAIN / batch)
                        step_times = repeat(forward, repeats=7, budget_s=budget_s)
                        epoch_times = [t * steps for t in step_times]
                        setup = 0.0
                    else:
                        backward, params, setup = build(variant, rank, w0, b0, x, y, batch)
                        step, epoch = trainer(backward, params, batch)
                        step_times = repeat(step, repeats=7, budget_s=budget_s)
                        epoch_times = repeat(epoch, repeats=5, budget_s=budget_s)
                    rows.append({**row, **summary(step_times, "step_"),
                                 **summary(epoch_times, "epoch_"), "setup_s": setup})  # fmt: skip
                    ms = 1000 * rows[-1]["epoch_median_s"]
                    print(f"  {d_in}x{d_out} r={rank} b={batch} {variant}: {ms:.2f} ms/epoch")
    frame = pd.DataFrame(rows)
    return add_ratios(frame)


def add_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """Per shape, rank and batch: how many times faster than loralib and than PEFT, per epoch."""
    keys = ["d_in", "d_out", "rank", "batch"]
    for reference in ("loralib", "peft"):
        ref = frame[frame["variant"] == reference].set_index(keys)["epoch_median_s"]
        frame[f"speedup_vs_{reference}"] = [
            ref.get(tuple(row[k] for k in keys), math.nan) / row["epoch_median_s"]
            for _, row in frame.iterrows()
        ]
    return frame
