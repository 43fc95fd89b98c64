"""The batched engine in one process: its achieved GFLOP/s on the default grid against one large
GEMM (the roofline), grouping ranks against padding them, and the GPU rows.

Everything runs on one torch thread, as a training job does, side by side in one process. Useful
FLOPs are counted from the shapes: the matrix products a step needs (LoRA against the cached
residual: U = xAᵀ, e = s·UBᵀ − r, Uᵀe, eB and (eB)ᵀx, so 2·b·r·(2·d_in + 3·d_out); full
fine-tuning: x·Wᵀ and eᵀx, so 4·b·d_in·d_out), plus every validation pass and epoch 0. Adam and
the other elementwise work are not counted as useful.
"""

from __future__ import annotations

import dataclasses
import math
import time

import pandas as pd
import torch

from benchmarks.common import one_torch_thread
from lorasweep.planning.cohorts import plan_cohorts, training_steps

GEMM_SIZE = 2048
LAYOUT_EPOCHS = 5


def gemm_rate(size: int = GEMM_SIZE, repeats: int = 5) -> float:
    """GFLOP/s of the best of ``repeats`` float32 (size × size) products on this thread."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=gen), torch.randn(size, size, generator=gen)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def useful_flops(run, dataset: dict) -> float:
    """Matrix-product FLOPs of a run's training and evaluation, from the shapes."""
    n, n_val = dataset["n_train"], dataset["n_val"]
    d_in, d_out = dataset["in_features"], dataset["out_features"]
    batch_size, steps = training_steps(run, dataset)
    if run.method == "full":
        per_row_step, per_row_eval = 4 * d_in * d_out, 2 * d_in * d_out
    else:
        per_row_step = 2 * run.rank * (2 * d_in + 3 * d_out)
        per_row_eval = 2 * run.rank * (d_in + d_out)
    evaluated_rows = n + n_val * (run.epochs + 1)
    return steps * batch_size * per_row_step + evaluated_rows * per_row_eval


def _default_grid(epochs: int | None = None):
    """The default config's runs on its first task replicate (the one dataset drawn here), and
    that dataset."""
    from lorasweep.planning.grouping import build_plan
    from lorasweep.sequential import load_config
    from lorasweep.tasks import synthetic
    from lorasweep.training.exact import cache_base_residuals

    config = load_config()
    runs = [run for run in build_plan(config).runs if run.task_seed == 0]
    if epochs is not None:
        runs = [dataclasses.replace(run, epochs=epochs) for run in runs]
    spec = config["datasets"][0]
    data = synthetic.generate(synthetic.DatasetSpec.from_config(spec))
    cache_base_residuals(data, runs)
    return runs, data, spec


def _train(cohorts, data, pad_ranks: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds to train ``cohorts`` with the engine."""
    from lorasweep.training.batched import train_cohort

    wall, cpu = time.perf_counter(), time.process_time()
    for cohort in cohorts:
        train_cohort(cohort, data, pad_ranks=pad_ranks)
    return time.perf_counter() - wall, time.process_time() - cpu


def _row(variant: str, runs, spec: dict, seconds: float, cpu: float, rate: float) -> dict:
    flops = sum(useful_flops(run, spec) for run in runs)
    return {
        "variant": variant,
        "runs": len(runs),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "useful_gflop": flops / 1e9,
        "gflops": flops / seconds / 1e9,
        "fraction_of_gemm": flops / seconds / 1e9 / rate,
    }


def run() -> pd.DataFrame:
    """Rows: one large GEMM; the engine on the default grid (30 epochs); and the grid's LoRA runs
    grouped by rank against padded into one cohort (5 epochs each)."""
    with one_torch_thread():
        before = gemm_rate()
        runs, data, spec = _default_grid()
        seconds, cpu = _train(plan_cohorts(runs), data)
        rate = max(before, gemm_rate())
        rows = [
            {"variant": f"gemm {GEMM_SIZE}²", "seconds": math.nan, "gflops": rate},
            _row("engine, default grid", runs, spec, seconds, cpu, rate),
        ]
        short, data, spec = _default_grid(epochs=LAYOUT_EPOCHS)
        lora = [run for run in short if run.method == "lora"]
        grouped = _train(plan_cohorts(lora), data)
        padded = _train([lora], data, pad_ranks=True)
        rows.append(
            _row(f"LoRA grouped by rank, {LAYOUT_EPOCHS} epochs", lora, spec, *grouped, rate)
        )
        rows.append(
            _row(f"LoRA padded to rank 64, {LAYOUT_EPOCHS} epochs", lora, spec, *padded, rate)
        )
    frame = pd.DataFrame(rows)
    frame.insert(1, "device", "cpu, 1 thread")
    return frame


def gpu() -> pd.DataFrame:
    """The GPU rows: a 1,000-run grid at 256×256 with the engine against the per-run loop on the
    same GPU, with peak memory; "not measured" where this machine has no GPU."""
    goal = "engine / per-run loop on one GPU, 1000 runs at 256×256"
    if not torch.cuda.is_available():
        return pd.DataFrame([{"measurement": goal, "value": "not measured",
                              "note": "no GPU on this machine"}])  # fmt: skip
    return pd.DataFrame([_gpu_measurement(goal)])


def _gpu_measurement(goal: str) -> dict:
    """The engine trains 1,000 LoRA runs (10 seeds × 100 learning rates, r = 8) on the default
    dataset; the per-run loop (:mod:`benchmarks.user_loop`) trains 20 of them and is scaled to
    1,000. ``benchmarks/gpu.sh`` runs it on a lent GPU."""
    from benchmarks.user_loop import train as user_train
    from lorasweep.training.batched import train_cohort

    runs, data, spec = _default_grid()
    template = next(run for run in runs if run.method == "lora" and run.rank == 8)
    grid = [dataclasses.replace(template, seed=s, lr=1e-4 * (1 + i)) for s in range(10)
            for i in range(100)]  # fmt: skip
    device = torch.device("cuda")
    data.tensors = {k: v.to(device) for k, v in data.tensors.items()}
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    train_cohort(grid, data, device)
    torch.cuda.synchronize(device)
    engine = time.perf_counter() - start
    from lorasweep.tasks import synthetic

    plain = synthetic.generate(synthetic.DatasetSpec.from_config(spec)).tensors
    plain = {k: v.to(device) for k, v in plain.items()}
    start = time.perf_counter()
    for run in grid[:20]:
        user_train(run, plain)
    torch.cuda.synchronize(device)
    loop = (time.perf_counter() - start) * len(grid) / 20
    try:
        utilisation = f"{torch.cuda.utilization(device)} % utilisation at the end, "
    except Exception:  # needs pynvml
        utilisation = ""
    return {"measurement": goal, "value": f"{loop / engine:.1f}×",
            "note": f"engine {engine:.1f} s, loop {loop:.1f} s (from 20 runs), peak memory "
                    f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB, {utilisation}"
                    f"{torch.cuda.get_device_name(device)}"}  # fmt: skip
