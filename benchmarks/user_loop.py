"""The "what a user would write" baseline: a plain PyTorch loop that trains a config's runs one by
one, with none of this project's machinery.

Each run is a loralib-style layer, ``base(x) + (x·Aᵀ·Bᵀ)·s`` over the frozen base (A kaiming-
uniform, B = 0, as loralib), or the base layer itself for full fine-tuning; Adam with B at
λ·lr; shuffled mini-batches; the validation loss after every epoch. The data and the list of
runs come from lorasweep (setup, not training), so both sides train the same runs on the same
data. It writes one CSV row per run with its final losses. It runs on one torch thread, as the
pipeline's jobs do: with PyTorch's default of a thread per core, these small operations ran 5–10×
slower on the shared two-core machine of the published numbers. Run it in a fresh process, as
the benchmark does, so it pays Python and torch start-up like the pipeline:

    python -m benchmarks.user_loop --configfile config/config.yaml --out /tmp/user_loop.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import time

import torch
from torch import nn


class LoRALinear(nn.Module):
    """loralib's ``Linear`` reduced to what a run needs: a frozen base and a scaled update."""

    def __init__(self, base: nn.Linear, rank: int, scaling: float, generator: torch.Generator):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        self.base.bias.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


def build(run, tensors: dict) -> tuple[nn.Module, list[dict]]:
    from lorasweep.models.lora import scaling_factor

    base = nn.Linear(tensors["W0"].shape[1], tensors["W0"].shape[0], device=tensors["W0"].device)
    with torch.no_grad():
        base.weight.copy_(tensors["W0"])
        base.bias.copy_(tensors["b0"])
    if run.method == "full":
        return base, [{"params": base.parameters(), "lr": run.lr}]
    generator = torch.Generator().manual_seed(run.seed)
    scaling = scaling_factor(run.scaling, run.alpha, run.rank)
    model = LoRALinear(base.cpu(), run.rank, scaling, generator).to(tensors["W0"].device)
    groups = [
        {"params": [model.lora_A], "lr": run.lr},
        {"params": [model.lora_B], "lr": run.lr * run.lr_ratio},
    ]
    return model, groups


def train(run, tensors: dict) -> dict:
    """Train one run; its final train and validation losses."""
    model, groups = build(run, tensors)
    optimizer = torch.optim.Adam(groups)
    x, y = tensors["X_train"], tensors["y_train"]
    n = x.shape[0]
    batch = min(run.batch_size or n, n)
    order = torch.Generator().manual_seed(run.seed)
    for _ in range(run.epochs):
        total = 0.0
        for index in torch.randperm(n, generator=order).to(x.device).split(batch):
            loss = nn.functional.mse_loss(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        with torch.no_grad():
            val = nn.functional.mse_loss(model(tensors["X_val"]), tensors["y_val"]).item()
    return {"run_id": run.run_id, "train_loss": total / n, "val_loss": val}


def main(argv: list[str] | None = None) -> None:
    from lorasweep.planning.runs import expand_runs
    from lorasweep.sequential import load_config
    from lorasweep.tasks import synthetic

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", nargs="*", default=[])
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(*args.configfile)
    start = time.perf_counter()
    data = {
        d["name"]: synthetic.generate(synthetic.DatasetSpec.from_config(d)).tensors
        for d in config["datasets"]
    }
    rows = [train(run, data[run.dataset]) for run in expand_runs(config)]
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} runs in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
