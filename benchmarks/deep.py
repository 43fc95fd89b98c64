"""The batched engine on a deep model against training the same runs one by one, in one
process at one thread (as training jobs run): config/deep.yaml's ``tf_mlp`` transformer, LoRA
on its MLP, one run per seed, so every run draws its own mini-batches."""

from __future__ import annotations

import time

import pandas as pd
import yaml

from benchmarks.common import REPO, one_torch_thread

BATCH_SIZES = (2, 4, 8, 32)
EPOCHS = 4


def _dataset():
    from lorasweep.tasks import synthetic

    preset = yaml.safe_load((REPO / "config" / "deep.yaml").read_text())
    entry = next(d for d in preset["datasets"] if d["name"] == "tf_mlp")
    return synthetic.generate(synthetic.DatasetSpec.from_config(entry))


RUN = {"dataset": "tf_mlp", "method": "lora", "lr": 0.01, "epochs": EPOCHS, "batch_size": 256,
       "bias": "none", "device": "cpu", "rank": 2, "alpha": 8.0, "scaling": "standard",
       "init": "kaiming", "targets": "mlp"}  # fmt: skip


def _specs(runs: int) -> list:
    from lorasweep.planning.runs import RunSpec

    return [RunSpec(**RUN, seed=seed) for seed in range(runs)]


def _cpu_seconds(train) -> float:
    start = time.process_time()
    train()
    return time.process_time() - start


def run() -> pd.DataFrame:
    """CPU seconds of each cohort size trained together and one by one, after one warm-up cohort
    (the first vmapped program in a process costs about a second more)."""
    from lorasweep.training.batched import train_cohort
    from lorasweep.training.loop import train_run

    with one_torch_thread():
        data = _dataset()
        train_cohort(_specs(2), data)
        rows = []
        for runs in BATCH_SIZES:
            specs = _specs(runs)
            batched = _cpu_seconds(lambda specs=specs: train_cohort(specs, data))
            single = _cpu_seconds(lambda specs=specs: [train_run(s, data) for s in specs])
            rows.append({"runs": runs, "batched_s": batched, "one_by_one_s": single,
                         "one_by_one_over_batched": single / batched})  # fmt: skip
    return pd.DataFrame(rows)
