"""The one memory model (planning/resources.py) against the peak RSS of a real training process:
a subprocess generates a dataset, resets its peak (``/proc/self/clear_refs``), trains one cohort
with the batched engine and reports VmHWM."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lorasweep.planning.resources import GIB, cohort_bytes, dataset_bytes, job_bytes
from lorasweep.planning.runs import RunSpec
from lorasweep.tasks.synthetic import DatasetSpec

REPO = Path(__file__).resolve().parents[1]
FACTOR = 3.0
"""The memory model is meant to be right within this factor, for the whole job and for the part
training a cohort adds to it. It mostly overestimates (an overestimate only cuts a cohort into
more waves than it needs, never changes a number); the test prints both sides."""

MEASURING_ENV = {
    "PYTHONPATH": str(REPO / "src"),
    "MALLOC_MMAP_THRESHOLD_": "65536",
    "MALLOC_TRIM_THRESHOLD_": "0",
}
"""glibc returns every freed tensor to the system at once, so the RSS before training holds only
live memory, not heap left over from generating the dataset that training would reuse unseen."""

SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
from lorasweep.planning.runs import RunSpec
from lorasweep.tasks.synthetic import DatasetSpec, generate
from lorasweep.training.batched import train_cohort
from lorasweep.training.exact import cache_base_residuals

def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

entry, runs, budget_mib = json.loads(sys.argv[1])
specs = [RunSpec(**run) for run in runs]
dataset = generate(DatasetSpec.from_config(entry))
dataset.tensors = {k: v.clone() for k, v in dataset.tensors.items()}
cache_base_residuals(dataset, specs)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = kib("VmRSS")
train_cohort(specs, dataset, torch.device("cpu"), budget_mib)
print(json.dumps({"before": before, "peak": kib("VmHWM")}))
"""

LAYER = {"name": "big", "kind": "lowrank", "in_features": 384, "out_features": 384,
         "task_rank": 4, "noise_std": 0.1, "n_train": 1024, "n_val": 1024}  # fmt: skip
TRANSFORMER = {"name": "tf", "kind": "transformer", "d_model": 32, "n_heads": 4, "n_layers": 2,
               "seq_len": 32, "d_ff": 128, "task_rank": 1, "noise_std": 0.1, "n_train": 256,
               "n_val": 256}  # fmt: skip
COMMON = {"seed": 0, "lr": 0.01, "epochs": 1, "bias": "none", "device": "cpu"}
CASES = {
    "single layer, full fine-tuning": (
        LAYER,
        [
            {**COMMON, "dataset": "big", "method": "full", "batch_size": None, "seed": s}
            for s in range(12)
        ],
    ),  # fmt: skip
    "single layer, LoRA": (
        LAYER,
        [
            {
                **COMMON,
                "dataset": "big",
                "method": "lora",
                "batch_size": 256,
                "rank": 64,
                "alpha": 8.0,
                "scaling": "standard",
                "init": "kaiming",
                "seed": s,
            }
            for s in range(24)
        ],
    ),  # fmt: skip
    "transformer, LoRA": (
        TRANSFORMER,
        [
            {
                **COMMON,
                "dataset": "tf",
                "method": "lora",
                "batch_size": None,
                "rank": 4,
                "alpha": 8.0,
                "scaling": "standard",
                "init": "kaiming",
                "targets": "all",
                "seed": s,
            }
            for s in range(4)
        ],
    ),  # fmt: skip
    "single layer, DoRA": (
        LAYER,
        [
            {
                **COMMON,
                "dataset": "big",
                "method": "dora",
                "batch_size": 256,
                "rank": 64,
                "alpha": 8.0,
                "scaling": "standard",
                "init": "kaiming",
                "seed": s,
            }
            for s in range(24)
        ],
    ),  # fmt: skip
    "transformer, DoRA": (
        TRANSFORMER,
        [
            {
                **COMMON,
                "dataset": "tf",
                "method": "dora",
                "batch_size": None,
                "rank": 4,
                "alpha": 8.0,
                "scaling": "standard",
                "init": "kaiming",
                "targets": "all",
                "seed": s,
            }
            for s in range(4)
        ],
    ),  # fmt: skip
    "transformer, full fine-tuning": (
        TRANSFORMER,
        [
            {**COMMON, "dataset": "tf", "method": "full", "batch_size": 128, "seed": s}
            for s in range(4)
        ],
    ),  # fmt: skip
}


def measure(entry: dict, runs: list[dict], budget_mib: float) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps([entry, runs, budget_mib])],
        capture_output=True, text=True, env=MEASURING_ENV, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("case", list(CASES))
def test_the_memory_model_is_within_a_factor_of_the_peak_rss(case):
    entry, runs = CASES[case]
    budget_mib = 1024
    measured = measure(entry, runs, budget_mib)
    dataset = DatasetSpec.from_config(entry).as_dict()
    specs = [RunSpec(**run) for run in runs]
    cohort = cohort_bytes(specs, dataset, budget_mib * 2**20)
    added = measured["peak"] - measured["before"]
    print(f"{case}: cohort {cohort / 2**20:.0f} MiB estimated, {added / 2**20:.0f} MiB measured")
    assert added / FACTOR <= cohort <= added * FACTOR
    job = job_bytes(specs, {entry["name"]: dataset}, "batched", budget_mib * 2**20)
    peak = measured["peak"]
    print(f"{case}: job {job / GIB:.2f} GiB estimated, {peak / GIB:.2f} GiB measured "
          f"(dataset {dataset_bytes(dataset, specs) / 2**20:.0f} MiB)")  # fmt: skip
    assert peak / FACTOR <= job <= peak * FACTOR
