"""Memory of LoRA against full fine-tuning at 4096×4096, r = 8, batch 4096.

Each variant trains two epochs in a fresh Python process exactly as a training job does
(lorasweep.jobs.run_job): the job caches the base residuals y − W₀x for the runs that use them
(cache_base_residuals, which lets a LoRA-only job drop y and W₀), then lorasweep.training.train_run
trains. The child reports its training-state bytes (trainable parameters + gradients + Adam's
moments, measured from the live tensors) and its peak resident set size. Both variants pay the
same floor: the interpreter, torch and the modules Adam imports on its first step, and the data.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
from pathlib import Path

import pandas as pd

from benchmarks.common import REPO

D, RANK, BATCH, N_TRAIN, N_VAL = 4096, 8, 4096, 4096, 256


def peak_rss_bytes() -> int:
    """This process's peak resident set size: VmHWM, which (unlike getrusage's ru_maxrss, which
    survives fork and exec on Linux) starts afresh in each new program."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(method: str) -> dict:
    """Build float32 data directly (no float64 intermediates) and train two epochs."""
    import torch

    from lorasweep.planning.runs import RunSpec
    from lorasweep.tasks.synthetic import Dataset, DatasetSpec
    from lorasweep.training.exact import cache_base_residuals
    from lorasweep.training.loop import train_run

    gen = torch.Generator().manual_seed(0)
    tensors = {
        "W0": torch.randn(D, D, generator=gen) / math.sqrt(D),
        "b0": torch.zeros(D),
        "X_train": torch.randn(N_TRAIN, D, generator=gen),
        "y_train": torch.randn(N_TRAIN, D, generator=gen),
        "X_val": torch.randn(N_VAL, D, generator=gen),
        "y_val": torch.randn(N_VAL, D, generator=gen),
    }
    spec = DatasetSpec(name="mem", kind="noise", in_features=D, out_features=D,
                       n_train=N_TRAIN, n_val=N_VAL, noise_std=1.0)  # fmt: skip
    lora = {"rank": RANK, "alpha": 16.0, "scaling": "standard", "init": "kaiming"}
    run = RunSpec(dataset="mem", method=method, seed=0, lr=1e-3, epochs=2, batch_size=BATCH,
                  bias="none", device="cpu", **(lora if method == "lora" else {}))  # fmt: skip
    dataset = Dataset(spec, tensors)
    del tensors
    cache_base_residuals(dataset, [run])
    result = train_run(run, dataset)
    return {
        "method": method,
        "trainable_params": result.counts.trainable,
        "train_state_bytes": result.train_state_bytes,
        "peak_rss_bytes": peak_rss_bytes(),
        "cached_base": result.cached_base,
    }


def run() -> pd.DataFrame:
    rows = []
    for method in ("lora", "full"):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", "--child", method],
            cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    frame = pd.DataFrame(rows)
    full = frame.set_index("method").loc["full"]
    frame["state_vs_full"] = frame["train_state_bytes"] / full["train_state_bytes"]
    frame["rss_vs_full"] = frame["peak_rss_bytes"] / full["peak_rss_bytes"]
    frame.insert(0, "shape", f"{D}x{D}, r={RANK}, batch {BATCH}")
    return frame


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=["lora", "full"], required=True)
    print(json.dumps(child(parser.parse_args().child)))
