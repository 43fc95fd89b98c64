"""Write one run's folder atomically: a temporary sibling renamed into place when complete, so a
run folder that exists is a finished run.

``<runs>/<run_id>/`` holds

- ``weights.safetensors``: the trained adapter, ``lora_A`` (r×d_in), ``lora_B`` (d_out×r) and
  ``bias`` when it trains, or the whole layer, ``weight`` and ``bias``, for full fine-tuning.
  A deep model's run stores the same per adapted module, under its name
  (``blocks.0.mlp.up.lora_A``), or the whole network's state dict for full fine-tuning, and its
  metadata also lists the ``modules`` it changed (and the ``targets`` pattern, for LoRA).
  For PiSSA also its starting point, ``lora_A_init`` (A₀) and ``lora_B_init`` (B₀): PiSSA
  moved s·B₀A₀ out of W₀, so its base W₀ − s·B₀A₀ and its change of weight s·(BA − B₀A₀) are
  formed from the folder without redoing the SVD. Its
  metadata holds ``run_id``, ``method`` and, for LoRA,
  ``rank``, ``alpha``, ``scaling_rule``, ``init`` and ``scaling``, the multiplier s itself;
- ``epochs.csv``: per-epoch losses and gradient norms, and ``source_loss`` where the dataset
  has a source task;
- ``timing.json``: wall-clock seconds, the only file that differs between reruns;
- ``provenance.json``: resolved parameters, dataset spec and checksum, versions, device, reuse
  key;
- ``metrics.json``: counts, training-state bytes, losses (``final_test_loss`` of the final
  weights on the test split, and for ``lowrank`` their exact ``population_loss``), theoretical
  optimum, status, ``adapter_bytes``, the size of the trained tensors saved alone (without
  A₀, B₀), and, where the dataset has a source task, ``final_source_loss`` and ``forgetting``
  (after − before);
- ``checksums.json``, written last: the SHA-256 of every other file but ``timing.json``,
  ``peft/`` included (:mod:`lorasweep.jobs.integrity`).

A single-layer LoRA run also has ``peft/``, the adapter in PEFT's format
(:mod:`lorasweep.models.peft_format`); a deep model's LoRA adapters are not exported in it yet.
A run of a method trained through PEFT (:mod:`lorasweep.training.peft_trainer`) has ``peft/``
as PEFT's ``save_pretrained`` wrote it, single layer and deep, and its ``weights.safetensors``
holds PEFT's trained tensors under PEFT's names plus the merged change of each module it
adapted, ``delta_weight`` (``blocks.0.mlp.up.delta_weight`` in a deep model).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from lorasweep.io import default_mode, save_tensors, tensors_to_bytes, write_csv, write_json
from lorasweep.jobs.integrity import write_checksums
from lorasweep.models.peft_format import write_adapter
from lorasweep.tasks.synthetic import GroundTruth
from lorasweep.training.loop import RunResult

EPOCH_COLUMNS = ["epoch", "train_loss", "val_loss", "grad_norm_A", "grad_norm_B", "grad_norm_W"]
SOURCE_COLUMN = "source_loss"
"""Last column of ``epochs.csv`` for a dataset with a source task; absent otherwise."""


def write_run(run_dir: Path, result: RunResult, truth: GroundTruth, provenance: Mapping) -> None:
    """Write a run's files into a temporary sibling folder, then rename it onto ``run_dir``."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.", suffix=".tmp"))
    try:
        spec = result.spec
        weights = tmp / "weights.safetensors"
        metadata = {"run_id": spec.run_id, "method": spec.method}
        if spec.record.through_peft:
            metadata |= {"rank": spec.rank, "alpha": spec.alpha, "scaling": None}
        elif spec.adapter:
            metadata |= {
                "rank": spec.rank,
                "alpha": spec.alpha,
                "scaling_rule": spec.scaling,
                "scaling": result.scaling,
                "init": spec.init,
            }
        if result.adapted is not None:
            metadata["modules"] = list(result.adapted)
            if spec.targets is not None:
                metadata["targets"] = spec.targets
        if result.peft_files:
            write_peft_files(tmp / "peft", result.peft_files)
        elif result.adapted is None and spec.adapter:
            write_adapter(tmp / "peft", spec, result.tensors, result.base_weight)
        stored = {**result.tensors, **result.initial_tensors, **result.delta_weights}
        save_tensors(weights, stored, metadata=metadata)
        has_source = SOURCE_COLUMN in result.epochs[0]
        columns = EPOCH_COLUMNS + [SOURCE_COLUMN] * has_source
        frame = pd.DataFrame(result.epochs).reindex(columns=columns)
        write_csv(tmp / "epochs.csv", frame)
        write_json(tmp / "timing.json", {"epoch_seconds": result.epoch_seconds})
        write_json(tmp / "provenance.json", {**provenance, "run": spec.as_dict()})
        write_json(
            tmp / "metrics.json",
            {
                **result.summary(truth),
                "adapter_bytes": len(tensors_to_bytes(result.tensors, metadata)),
            },
        )
        write_checksums(tmp)
        os.chmod(tmp, default_mode(directory=True))
        stale = run_dir.with_name(f".{run_dir.name}.stale")
        remove_path(stale)
        if os.path.lexists(run_dir):
            os.replace(run_dir, stale)
        os.replace(tmp, run_dir)
        try:
            remove_path(stale)
        except OSError as err:
            print(f"{run_dir}: the previous copy could not be removed from {stale} ({err})")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_peft_files(folder: Path, files: Mapping[str, bytes]) -> None:
    """A PEFT-trained run's ``save_pretrained`` output, file by file."""
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)


def remove_path(path: Path) -> None:
    """Remove ``path`` whatever it is: a folder with its contents, or a file or symbolic link
    itself (never what a link points to). Nothing there is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
