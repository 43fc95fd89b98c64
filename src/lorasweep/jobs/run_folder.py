"""Write one run's folder atomically: a temporary sibling renamed into place when complete, so a
run folder that exists is a finished run.

``<runs>/<run_id>/`` holds ``weights.safetensors`` (the trained adapter, or the whole layer for
full fine-tuning), ``epochs.csv`` (per-epoch losses and gradient norms), ``timing.json``
(wall-clock seconds, the only file that differs between reruns), ``provenance.json`` (resolved
parameters, dataset spec and checksum, versions, device, reuse key) and ``metrics.json``
(counts, training-state bytes, adapter size, losses, theoretical optimum, status). A LoRA run
also has ``peft/``, the adapter in PEFT's format (:mod:`lorasweep.models.peft_format`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from lorasweep.io import save_tensors, write_csv, write_json
from lorasweep.models.peft_format import write_adapter
from lorasweep.tasks.synthetic import GroundTruth
from lorasweep.training.loop import RunResult

EPOCH_COLUMNS = ["epoch", "train_loss", "val_loss", "grad_norm_A", "grad_norm_B", "grad_norm_W"]


def write_run(run_dir: Path, result: RunResult, truth: GroundTruth, provenance: Mapping) -> None:
    """Write a run's files into a temporary sibling folder, then rename it onto ``run_dir``."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.", suffix=".tmp"))
    try:
        spec = result.spec
        weights = tmp / "weights.safetensors"
        metadata = {"run_id": spec.run_id, "method": spec.method}
        if spec.method == "lora":
            metadata |= {
                "rank": spec.rank,
                "alpha": spec.alpha,
                "scaling_rule": spec.scaling,
                "scaling": result.scaling,
                "init": spec.init,
            }
            write_adapter(tmp / "peft", spec, result.tensors, result.base_weight)
        save_tensors(weights, result.tensors, metadata=metadata)
        frame = pd.DataFrame(result.epochs).reindex(columns=EPOCH_COLUMNS)
        write_csv(tmp / "epochs.csv", frame)
        write_json(tmp / "timing.json", {"epoch_seconds": result.epoch_seconds})
        write_json(tmp / "provenance.json", {**provenance, "run": spec.as_dict()})
        write_json(
            tmp / "metrics.json",
            {**result.summary(truth), "adapter_bytes": weights.stat().st_size},
        )
        os.chmod(tmp, 0o755)
        if run_dir.exists():
            stale = run_dir.with_name(f".{run_dir.name}.stale")
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(run_dir, stale)
            os.replace(tmp, run_dir)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
