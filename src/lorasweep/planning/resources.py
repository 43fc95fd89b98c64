"""Memory and work a config needs, estimated from the config alone, before any job runs.

Pure Python (no torch), so that Snakemake can refuse a config that cannot fit this machine
(``limits`` in config/README.md) in the time it takes to parse the Snakefile. The estimates
follow what :mod:`lorasweep.tasks.synthetic` and :mod:`lorasweep.training` allocate; they are
meant to be right within a small factor, not to the byte.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from lorasweep.models.names import linear_modules
from lorasweep.options import test_size
from lorasweep.planning.runs import budget_rank

GIB = 1 << 30
FLOAT32, FLOAT64 = 4, 8
PROCESS_BYTES = GIB // 2
"""What a job's process holds whatever the config: Python, torch and the BLAS it loads."""
STEP_MULTIPLY_ADDS = 10**7
"""What one optimizer step costs whatever its size (its Python and dispatch time), counted as
the multiply-adds a CPU core does in that time."""

GRID_AXES = ("rank", "alpha", "scaling", "init", "lr", "lr_ratio")
NETWORK_SIZES = ("d_model", "n_layers", "seq_len", "d_ff")
"""The deep kinds' size keys (besides those of a single layer)."""


def _block_settings(dataset: dict, block: dict) -> set:
    """(targets, rank, α, scaling, init, lr, λ) of a grid block's runs on ``dataset``: targets
    only for a deep dataset, and a fixed-budget block's rank from its ``rank_budget``."""
    if not linear_modules(dataset):
        return set(itertools.product([None], *(block[axis] for axis in GRID_AXES)))
    settings = set()
    for pattern in block.get("targets") or ["all"]:
        ranks = block["rank"]
        if "rank_budget" in block:
            ranks = [budget_rank(dataset, pattern, block["rank_budget"])]
        rest = (block[axis] for axis in GRID_AXES[1:])
        settings.update(itertools.product([pattern], ranks, *rest))
    return settings


def network_shape(dataset: dict) -> tuple[int, int, int, float]:
    """Per sample, (input values, output values, activations kept for the backward pass), and
    the multiply-adds of one forward pass, of a deep dataset's network: its linear modules on
    each of ``seq_len`` tokens plus the transformer's attention scores and mixing."""
    modules = linear_modules(dataset)
    tokens = dataset.get("seq_len") or 1
    layers, width = dataset["n_layers"], dataset["d_model"]
    if dataset["kind"] == "transformer":
        heads = dataset["n_heads"]
        per_token = layers * (8 * width + 2 * dataset["d_ff"] + 2 * heads * tokens)
        attention = layers * 2 * tokens * tokens * width
        inputs = outputs = tokens * width
    else:
        per_token = sum(m.in_features + m.out_features for m in modules) + 3 * layers * width
        attention = 0
        inputs, outputs = dataset["in_features"], dataset["out_features"]
    forward = tokens * sum(m.in_features * m.out_features for m in modules) + attention
    return inputs, outputs, tokens * per_token, forward


def run_counts(config: dict) -> dict[str, Counter]:
    """Per dataset, the number of runs by kind: ``("lora", rank, init)`` or ``("full",)``.

    Counts distinct runs, as the plan does: a run repeated by an extra grid counts once.
    """
    main = {"lr_ratio": [1.0], **config["grid"]}
    blocks = [main] + [{**main, **extra} for extra in config.get("extra_grids", [])]
    full = config.get("full_finetune", {})
    counts = {}
    replicated = len(config["seeds"]) * len(config.get("task_seeds", [0]))
    for dataset in config["datasets"]:
        name = dataset["name"]
        settings = set()
        for block in blocks:
            if name in block.get("datasets", [name]):
                settings.update(_block_settings(dataset, block))
        kinds = Counter(("lora", rank, init) for _, rank, _, _, init, _, _ in settings)
        kinds = Counter({kind: n * replicated for kind, n in kinds.items()})
        if full.get("enabled", False):
            kinds[("full",)] = len(full.get("lr", [])) * replicated
        counts[name] = kinds
    return counts


def _uses_gram(dataset: dict, train: dict) -> bool:
    """Whether LoRA runs train from sufficient statistics (see ``training.can_use_gram``; never
    for a deep model)."""
    if linear_modules(dataset):
        return False
    d_in, d_out, n = dataset["in_features"], dataset["out_features"], dataset["n_train"]
    full_batch = (train.get("batch_size") or n) >= n
    no_dropout = train.get("lora_dropout", 0.0) == 0
    return full_batch and no_dropout and 2 * d_in * (d_in + d_out) <= n * d_out


def generation_bytes(dataset: dict) -> float:
    """Peak memory of a job generating and saving a dataset: float64 W₀, ΔW* and their sum, the
    splits' x and y with the noise and temporaries of y's sum, then float32 copies of it all
    (and, while saving, the serialized bytes of those copies). A deep model's teacher also
    holds one layer's activations of the largest split."""
    d_in, d_out, weights = _dims(dataset)
    samples, largest = split_rows(dataset)
    stored = 2 * weights + samples * (d_in + d_out)
    drawing = FLOAT64 * (3 * weights + samples * (d_in + d_out) + 4 * largest * d_out)
    if linear_modules(dataset):
        drawing += FLOAT64 * largest * _layer_activations(dataset)
    return PROCESS_BYTES + max(drawing + FLOAT32 * stored, 2 * FLOAT32 * stored)


def split_rows(dataset: dict) -> tuple[int, int]:
    """Samples of the training, validation and test splits together, and of the largest."""
    sizes = (dataset["n_train"], dataset["n_val"], test_size(dataset))
    return sum(sizes), max(sizes)


def _dims(dataset: dict) -> tuple[int, int, int]:
    """(values in, values out) per sample and the weights of the model: d_in, d_out and
    d_in·d_out for one layer; a deep model's per-sample widths and all its linear weights."""
    modules = linear_modules(dataset)
    if not modules:
        d_in, d_out = dataset["in_features"], dataset["out_features"]
        return d_in, d_out, d_in * d_out
    d_in, d_out, _, _ = network_shape(dataset)
    return d_in, d_out, sum(m.in_features * m.out_features for m in modules)


def _layer_activations(dataset: dict) -> float:
    """Values per sample of one layer's (block's) activations in a deep model."""
    return network_shape(dataset)[2] / dataset["n_layers"]


def _network_run_bytes(dataset: dict, kinds: Counter, batch_size: int) -> float:
    """The largest run's own memory on a deep dataset: its copy of the network (full
    fine-tuning also its gradient and Adam's two moments; LoRA its largest adapter's), a
    mini-batch's activations for the backward pass, and one layer's over a whole split."""
    _, _, weights = _dims(dataset)
    _, _, activations, _ = network_shape(dataset)
    _, largest = split_rows(dataset)
    passes = batch_size * activations + largest * _layer_activations(dataset)
    ranks = [kind[1] for kind in kinds if kind[0] == "lora"]
    adapter = max(ranks, default=0) * sum(
        m.in_features + m.out_features for m in linear_modules(dataset)
    )
    state = 4 * weights if ("full",) in kinds else weights + 4 * adapter
    return FLOAT32 * (state + passes)


def training_bytes(config: dict) -> float:
    """Peak memory of a training job, which may hold every dataset its runs use: per dataset
    the float32 tensors and the residual y − W₀x that LoRA runs train on (a copy of y even
    where it overwrites y, since the dataset is read from a memory-mapped file); and the
    largest run's own state (full fine-tuning: a copy of W₀ with its gradient and Adam's two
    moments, plus a whole split's prediction when it is evaluated; LoRA: its adapter, or the
    float64 Gram statistics). A deep dataset holds no residual; its runs hold what
    :func:`_network_run_bytes` counts."""
    counts = run_counts(config)
    held, runs = 0.0, [0.0]
    for dataset in config["datasets"]:
        kinds = counts[dataset["name"]]
        n, (samples, largest) = dataset["n_train"], split_rows(dataset)
        if linear_modules(dataset):
            d_in, d_out, weights = _dims(dataset)
            held += FLOAT32 * (2 * weights + samples * (d_in + d_out))
            batch_size = min(config["train"].get("batch_size") or n, n)
            runs.append(_network_run_bytes(dataset, kinds, batch_size))
            continue
        d_in, d_out, weights = _dims(dataset)
        held += FLOAT32 * (2 * weights + samples * (d_in + d_out))
        ranks = [kind[1] for kind in kinds if kind[0] == "lora"]
        if ranks:
            held += FLOAT32 * samples * d_out
            runs.append(FLOAT32 * 4 * max(ranks) * (d_in + d_out))
            if _uses_gram(dataset, config["train"]):
                runs.append(FLOAT64 * d_in * (d_in + d_out))
        if ("full",) in kinds:
            runs.append(FLOAT32 * (4 * weights + 3 * largest * d_out))
    return PROCESS_BYTES + held + max(runs)


def multiply_adds(config: dict) -> float:
    """Multiply-adds of every run: forward and backward passes over the training split each
    epoch (or, for full-batch LoRA, the Gram statistics once and a step on them), the
    validation split each epoch, the training split once more at epoch 0 and the test split
    once at the end, plus
    :data:`STEP_MULTIPLY_ADDS` per optimizer step. A deep model's run, LoRA or not, passes
    through the whole network: three forward passes' work per training sample."""
    train = config["train"]
    epochs = train["epochs"]
    total = 0.0
    counts = run_counts(config)
    for dataset in config["datasets"]:
        d_in, d_out, _ = _dims(dataset)
        n, n_val = dataset["n_train"], dataset["n_val"]
        steps = epochs * math.ceil(n / min(train.get("batch_size") or n, n))
        gram = _uses_gram(dataset, train)
        for kind, count in counts[dataset["name"]].items():
            if linear_modules(dataset):
                width = network_shape(dataset)[3]
            else:
                width = d_in * d_out if kind[0] == "full" else kind[1] * (d_in + d_out)
            if kind[0] == "lora" and gram:
                fit = n * d_in * (d_in + d_out) + 3 * epochs * kind[1] * d_in * (d_in + d_out)
            else:
                fit = 3 * epochs * n * width
            evaluate = (epochs + 1) * n_val * width + (n + test_size(dataset)) * width
            total += count * (fit + evaluate + steps * STEP_MULTIPLY_ADDS)
    return total


def optimizer_steps(config: dict) -> int:
    """Optimizer steps of every run together."""
    train = config["train"]
    counts = run_counts(config)
    return sum(
        sum(counts[d["name"]].values())
        * train["epochs"]
        * math.ceil(d["n_train"] / min(train.get("batch_size") or d["n_train"], d["n_train"]))
        for d in config["datasets"]
    )


def _get(config: dict, path: tuple):
    for part in path:
        config = config[part]
    return config


def largest_factor(estimate, config: dict, paths: list[tuple]) -> tuple:
    """The key (a path into ``config``) whose doubling raises ``estimate(config)`` most; the
    earliest of ``paths`` among those that raise it about equally."""
    base = estimate(config)

    def growth(path: tuple) -> float:
        doubled = copy.deepcopy(config)
        _get(doubled, path[:-1])[path[-1]] = 2 * _get(config, path)
        return round(math.log2(max(estimate(doubled), base) / base), 2) if base > 0 else 0.0

    return max(paths, key=lambda path: (growth(path), -paths.index(path)))


def machine_memory_bytes(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """MemTotal of this machine, or None where /proc/meminfo cannot be read."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def gpu_memory_bytes() -> int | None:
    """Memory of the smallest NVIDIA GPU here, from ``nvidia-smi``; None without one."""
    if not Path("/proc/driver/nvidia/gpus").is_dir() or shutil.which("nvidia-smi") is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
        sizes = [int(float(line)) * (1 << 20) for line in out.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return min(sizes) if sizes else None
