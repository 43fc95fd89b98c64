"""The one cost model and the one memory model of training, and the memory of generating a
dataset: estimated from the config alone, before any job runs.

Pure Python (no torch), so that Snakemake can plan jobs and refuse a config that cannot fit this
machine (``limits`` in config/README.md) in the time it takes to parse the Snakefile. Both models
read the one description of each architecture (:mod:`lorasweep.models.architecture`) and model
the engine that actually runs: the batched engine trains cohorts wave by wave within the memory
budget, and ``train.engine: single`` trains every run as a cohort of one.

- **Cost** (:func:`run_cost`, :func:`cohort_cost`), in multiply-add equivalents: the products of
  every step and evaluation, :data:`ERROR_ELEMENT_COST` per output element, and
  :data:`STEP_COST` for dispatching each step of each wave. Job balancing, a job's ETA and
  ``limits.multiply_adds`` all use it.
- **Memory** (:func:`run_bytes`, :func:`cohort_waves`, :func:`job_bytes`): a job holds its
  process, every dataset its runs use, and the largest wave of its cohorts. The wave budget of
  training and ``limits.memory_gib`` use it; a test holds it to the peak RSS of a real training
  process within a factor of 2.

The estimates are meant to be right within a small factor, not to the byte.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lorasweep.models import registry
from lorasweep.models.architecture import describe, linear_modules
from lorasweep.models.names import select
from lorasweep.options import test_size
from lorasweep.planning.cohorts import (
    aligned,
    batchable,
    by_order,
    order_key,
    plan_cohorts,
    rows_per_chunk,
    training_steps,
)
from lorasweep.planning.runs import RunSpec, budget_rank

GIB = 1 << 30
FLOAT32, FLOAT64 = 4, 8
FLOAT_BYTES = FLOAT32
PROCESS_BYTES = GIB // 2
"""What a job's process holds whatever the config: Python, torch and the BLAS it loads."""

STEP_COST = 2.5e6
"""Cost of dispatching one step of one wave (about twenty operations) per linear module, in
multiply-adds: the dispatch time times the rate the batched products reach on one CPU core, a
calibration (a deep network's step dispatches about that many operations per module; not
calibrated on a deep grid)."""

ERROR_ELEMENT_COST = 50
"""Cost, in multiply-adds, of each element of a run's error per step: forming it, its loss,
the passes of both gradient products over it and the optimizer's share (calibrated on a
rank-1 step at 256×256, mini-batch 128)."""

DEFAULT_BUDGET_MIB = {"cpu": 1024, "cuda": None}
"""Memory a wave may allocate beyond its dataset when ``train.memory_budget_mib`` is null: 1 GiB
on the CPU, and on a GPU a quarter of the device's memory (``None`` here: only the training job
can ask the device; the config check then takes the CPU's)."""

SHARED_ORDER_RUNS = 4
"""Runs that draw the same mini-batches get waves of their own once there are this many of them:
a wave whose runs share each step's rows gathers them once, where a mixed wave gathers them
per run."""

GRID_AXES = ("rank", "alpha", "scaling", "init", "lr", "lr_ratio")
NETWORK_SIZES = ("d_model", "n_layers", "seq_len", "d_ff")
"""The deep kinds' size keys (besides those of a single layer)."""


# --- the memory model -------------------------------------------------------------------------


def split_rows(dataset: dict) -> tuple[int, int]:
    """Samples of the training, validation and test splits together, and of the largest."""
    sizes = (dataset["n_train"], dataset["n_val"], test_size(dataset))
    return sum(sizes), max(sizes)


def source_rows(dataset: dict) -> int:
    """Rows of the dataset's source-task split (0 where it has none)."""
    return (dataset.get("source") or {}).get("n", 0)


def step_and_widest_rows(run: RunSpec, dataset: dict) -> tuple[int, int]:
    """A step's rows, and the most rows one pass reads: a step, or a whole held-out split
    evaluated at once."""
    batch_size, _ = training_steps(run, dataset)
    return batch_size, max(batch_size, dataset["n_val"], test_size(dataset), source_rows(dataset))


def priced_rank(run: RunSpec) -> int:
    """The rank the models price an adapter run at: its own, or 1 for a method without one
    (IA3's per-feature vectors)."""
    return run.rank if run.rank is not None else 1


def slot_elements(run: RunSpec, d_in: int, d_out: int) -> int:
    """Length of one run's slot on a single layer: every tensor it trains, each aligned to
    :data:`~lorasweep.planning.cohorts.ALIGN` (DoRA's magnitude m among them)."""
    if registry.is_full(run.method):
        return aligned(d_out * d_in) + aligned(d_out)
    bias = aligned(d_out) if run.bias == "lora_only" else 0
    magnitude = aligned(d_out) if registry.method(run.method).magnitude else 0
    rank = priced_rank(run)
    return aligned(rank * d_in) + aligned(rank * d_out) + magnitude + bias


def network_slot_elements(run: RunSpec, dataset: dict) -> int:
    """Length of one run's slot on a deep dataset: each tensor it trains, aligned
    (every A, B, DoRA magnitude m and trained bias of the modules its ``targets`` select for an
    adapter; every parameter of the described network for full fine-tuning)."""
    architecture = describe(dataset)
    if registry.is_full(run.method):
        return sum(aligned(math.prod(shape)) for _, shape in architecture.parameters)
    chosen = select(architecture.linears, run.targets or "all")
    trained_rows = (run.bias == "lora_only") + registry.method(run.method).magnitude
    bias = [trained_rows * aligned(m.out_features) for m in chosen]
    rank = priced_rank(run)
    adapters = [aligned(rank * m.in_features) + aligned(rank * m.out_features)
                for m in chosen]  # fmt: skip
    return sum(adapters) + sum(bias)


def network_run_bytes(run: RunSpec, dataset: dict) -> int:
    """Bytes one run of the generic objective (a deep dataset, or a method the hand-fused
    single-layer objective does not compute, whose layer trains as a network of one module) adds
    to a cohort's wave: its slot seven times (parameters, gradients as computed and as stored,
    Adam's two moments and two temporaries); its rows of x and y for a step and for a whole
    split; a step's activations three times (kept for the backward pass, and their gradients);
    a whole split's activations of one layer while it is evaluated; a deep run's own copy of
    the network while the wave is built (a single layer's adapter wraps the shared W₀); with
    PiSSA its own frozen weights of the modules it adapts; and where the method forms a merged
    weight (DoRA), its temporaries of every adapted module, and its extra outputs among the
    activations."""
    architecture = describe(dataset)
    record = registry.method(run.method)
    chosen = select(architecture.linears, run.targets or "all") if record.adapter else []
    batch_size, widest = step_and_widest_rows(run, dataset)
    activations = architecture.activations()
    activations += record.output_copies * architecture.tokens * sum(m.out_features for m in chosen)
    elements = 7 * network_slot_elements(run, dataset)
    if architecture.deep:
        elements += network_slot_elements(dataclasses.replace(run, method="full"), dataset)
    elements += (batch_size + widest) * (architecture.inputs + architecture.outputs)
    elements += 3 * batch_size * activations + 2 * widest * activations / architecture.n_layers
    elements += record.merged_weight_copies * sum(m.weights for m in chosen)
    if record.adapter and registry.replaces_base(run.init):
        elements += sum(m.weights for m in chosen)
    return int(FLOAT_BYTES * elements)


def run_bytes(run: RunSpec, dataset: dict) -> int:
    """Bytes one run adds to a cohort's wave, beyond the dataset every run shares; a deep
    dataset's run, or one of a method the fused single-layer objective does not compute (DoRA):
    :func:`network_run_bytes`.

    Per run: the slot's parameters, gradients, Adam's two moments and its two temporaries; with
    mini-batches, a step's rows of x and of the target, gathered per run (and masked, with
    dropout), where a full batch is one view that every run shares; an adapter's activations U,
    s·U and their gradient for the widest pass's rows; the error of one row chunk, twice (the
    error and its square); and with PiSSA the run's own residual of every split.
    """
    if linear_modules(dataset) or not registry.method(run.method).fused:
        return network_run_bytes(run, dataset)
    d_in, d_out = dataset["in_features"], dataset["out_features"]
    batch_size, widest = step_and_widest_rows(run, dataset)
    rows = min(widest, rows_per_chunk(d_out))
    elements = 6 * slot_elements(run, d_in, d_out) + 2 * rows * d_out
    if batch_size < dataset["n_train"] or run.dropout > 0:
        elements += batch_size * (d_in + d_out)
    if registry.is_adapter(run.method):
        elements += 3 * widest * priced_rank(run)
    if registry.is_adapter(run.method) and registry.replaces_base(run.init):
        elements += (split_rows(dataset)[0] + source_rows(dataset)) * d_out
    return FLOAT_BYTES * elements


def budget_bytes(budget_mib: float | None, device_type: str) -> int | None:
    """The budget in bytes: ``budget_mib``, or the device's default (:data:`DEFAULT_BUDGET_MIB`;
    ``None`` where the caller must ask the device)."""
    if budget_mib is None:
        budget_mib = DEFAULT_BUDGET_MIB.get(device_type)
    return None if budget_mib is None else int(budget_mib * 2**20)


def cohort_waves(runs: Sequence[RunSpec], dataset: dict, budget: int) -> list[list[RunSpec]]:
    """Split one cohort into waves that each fit ``budget`` bytes (:func:`run_bytes`), at least
    one run per wave. Runs that draw the same mini-batches (:func:`order_key`) share waves:
    groups of at least :data:`SHARED_ORDER_RUNS` of them are split on their own, and the
    smaller groups together."""
    n_train = dataset["n_train"]
    groups: dict[object, list[RunSpec]] = {}
    for run in sorted(runs, key=lambda r: by_order(r, n_train)):
        groups.setdefault(order_key(run, n_train), []).append(run)
    small = [run for group in groups.values() if len(group) < SHARED_ORDER_RUNS for run in group]
    parts = [group for group in groups.values() if len(group) >= SHARED_ORDER_RUNS]
    waves: list[list[RunSpec]] = []
    for part in [*parts, small] if small else parts:
        used = budget
        for run in part:
            size = run_bytes(run, dataset)
            if used + size > budget:
                waves.append([])
                used = 0
            waves[-1].append(run)
            used += size
    return waves


def uses_gram(run: RunSpec, dataset: dict) -> bool:
    """Whether a LoRA run of one layer trains from sufficient statistics (see
    ``training.exact.can_use_gram``): an additive method (not DoRA), full batch, no dropout,
    and statistics no larger than the residual."""
    if not registry.method(run.method).additive or linear_modules(dataset):
        return False
    d_in, d_out, n = dataset["in_features"], dataset["out_features"], dataset["n_train"]
    full_batch = (run.batch_size or n) >= n
    return full_batch and run.dropout == 0 and 2 * d_in * (d_in + d_out) <= n * d_out


def dataset_bytes(dataset: dict, runs: Iterable[RunSpec]) -> float:
    """What a training job holds of one dataset for ``runs``: its float32 weights (base and
    shift) and every split, and for runs of one layer of an additive method (LoRA, not DoRA)
    the residual y − W₀x (a copy of y even where it overwrites y, since the dataset is read
    from a memory-mapped file)."""
    architecture = describe(dataset)
    samples, _ = split_rows(dataset)
    held = 2 * architecture.linear_weights() + samples * (
        architecture.inputs + architecture.outputs
    )
    if not architecture.deep and any(registry.method(run.method).additive for run in runs):
        held += samples * architecture.outputs
    return FLOAT32 * held


def cohort_bytes(cohort: Sequence[RunSpec], dataset: dict, budget: int) -> float:
    """Peak memory of training ``cohort`` beyond its dataset: its largest wave
    (:func:`cohort_waves`; a cohort the engine does not stack trains run by run), plus the
    float64 sufficient statistics that full-batch LoRA runs of one layer share."""
    waves = (
        cohort_waves(cohort, dataset, budget)
        if batchable(cohort[0], dataset)
        else [[run] for run in cohort]
    )
    peak = max(sum(run_bytes(run, dataset) for run in wave) for wave in waves)
    if uses_gram(cohort[0], dataset):
        d_in, d_out = dataset["in_features"], dataset["out_features"]
        peak += FLOAT64 * d_in * (d_in + d_out)
    return peak


def job_bytes(
    runs: Sequence[RunSpec], datasets: Mapping[str, dict], engine: str, budget: int
) -> float:
    """Peak memory of a training job: its process, every dataset its runs use (a job keeps each
    dataset it has loaded) and the largest of its cohorts (:func:`cohort_bytes`)."""
    cohorts = plan_cohorts(runs, engine, datasets)
    held = 0.0
    for name in dict.fromkeys(run.dataset for run in runs):
        held += dataset_bytes(datasets[name], [run for run in runs if run.dataset == name])
    peak = max(cohort_bytes(c, datasets[c[0].dataset], budget) for c in cohorts)
    return PROCESS_BYTES + held + peak


def _plan(config: dict):
    from lorasweep.planning.grouping import build_plan

    datasets = {d["name"]: d for d in config["datasets"]}
    return build_plan(config), datasets, config["train"].get("engine", "batched")


def training_bytes(config: dict) -> float:
    """Peak memory of the config's largest training job (:func:`job_bytes`), its waves cut to
    ``train.memory_budget_mib`` (null: the CPU's default, :data:`DEFAULT_BUDGET_MIB`)."""
    plan, datasets, engine = _plan(config)
    budget = budget_bytes(config["train"].get("memory_budget_mib"), "cpu")
    return max(job_bytes(runs, datasets, engine, budget) for runs in plan.jobs.values())


# --- the cost model ---------------------------------------------------------------------------


def _per_sample(run: RunSpec, dataset: dict) -> tuple[float, float]:
    """(multiply-adds of a training step, output values) per sample.

    One layer, against the cached residual: LoRA 2.5·r·(d_in + d_out) (forward, error, and the
    three gradient products); full fine-tuning 2·d_in·d_out (forward and weight gradient). A
    layer of a method the fused objective does not compute (DoRA) has no cached residual: its
    forward W₀x (d_in·d_out, once more for the dropped input W₀x̃ with dropout) plus the
    adapter's. A deep network: three forward passes (forward, and the backward pass through
    every module), plus the adapter's 2.5·r·(d_in + d_out) per token of each module it adapts
    (and DoRA's W₀x̃ with dropout); its output values are every module's. The method's
    ``output_copies`` add as many output values per adapted module."""
    architecture = describe(dataset)
    record = registry.method(run.method)
    chosen = select(architecture.linears, run.targets or "all") if record.adapter else []
    extra = record.output_copies * architecture.tokens * sum(m.out_features for m in chosen)
    dropped = 0
    if record.magnitude and run.dropout > 0:
        dropped = architecture.tokens * sum(m.weights for m in chosen)
    adapter = architecture.tokens * (run.rank or 1) * sum(m.in_features + m.out_features
                                                          for m in chosen)  # fmt: skip
    if architecture.deep:
        train = 3 * architecture.forward_multiply_adds()
        if record.adapter:
            train += 2.5 * adapter + dropped
        values = architecture.tokens * sum(m.out_features for m in architecture.linears)
        return train, values + extra
    d_in, d_out = architecture.inputs, architecture.outputs
    if not record.adapter:
        return 2 * d_in * d_out, d_out
    if record.fused:
        return 2.5 * adapter, d_out
    return d_in * d_out + dropped + 2.5 * adapter, d_out + extra


def run_cost(run: RunSpec, dataset: dict) -> float:
    """A run's own share of its cohort's cost, in multiply-add equivalents: per step, the
    mini-batch's products and :data:`ERROR_ELEMENT_COST` per element of its error
    (:func:`_per_sample`) and what the method costs per step whatever the mini-batch (DoRA's
    merged weights and their row norms, ``step_multiply_adds`` of each adapted module), or, for
    full-batch LoRA from sufficient statistics, the statistics once (n·d_in·(d_in + d_out)) and
    3·r·d_in·(d_in + d_out) per step. Evaluation passes are
    left out: a forward pass over the held-out splits each epoch is about a tenth of the
    training work of the default study, and counting them would move runs between its jobs."""
    batch_size, steps = training_steps(run, dataset)
    train, values = _per_sample(run, dataset)
    if uses_gram(run, dataset):
        d_in, d_out = dataset["in_features"], dataset["out_features"]
        statistics = dataset["n_train"] * d_in * (d_in + d_out)
        return statistics + 3 * steps * run.rank * d_in * (d_in + d_out)
    return steps * (batch_size * (train + ERROR_ELEMENT_COST * values) + _per_step(run, dataset))


def _per_step(run: RunSpec, dataset: dict) -> float:
    """Multiply-adds of a training step that do not grow with the mini-batch: the method's
    ``step_multiply_adds`` of each module it adapts (0 for LoRA and full fine-tuning)."""
    record = registry.method(run.method)
    if not record.adapter:
        return 0
    chosen = select(describe(dataset).linears, run.targets or "all")
    rank = priced_rank(run)
    return sum(record.step_multiply_adds(m.in_features, m.out_features, rank) for m in chosen)


def cohort_cost(cohort: Sequence[RunSpec], dataset: dict) -> float:
    """Estimated cost of training ``cohort`` together: its runs' :func:`run_cost` plus the
    dispatch of each step once per wave and linear module (:data:`STEP_COST`; about one wave per
    data order). A cohort the engine does not stack (or any run with ``train.engine: single``,
    a cohort of one) pays the dispatch once per run."""
    _, steps = training_steps(cohort[0], dataset)
    modules = len(describe(dataset).linears)
    if batchable(cohort[0], dataset):
        waves = len({order_key(run, dataset["n_train"]) for run in cohort})
    else:
        waves = len(cohort)
    return steps * STEP_COST * modules * waves + sum(run_cost(run, dataset) for run in cohort)


def multiply_adds(config: dict) -> float:
    """The cost of every run of the config's plan (:func:`cohort_cost` of each cohort of each
    job, with the engine it asks for)."""
    plan, datasets, engine = _plan(config)
    return sum(
        cohort_cost(cohort, datasets[cohort[0].dataset])
        for runs in plan.jobs.values()
        for cohort in plan_cohorts(runs, engine, datasets)
    )


def optimizer_steps(config: dict) -> int:
    """Optimizer steps of every run together."""
    plan, datasets, _ = _plan(config)
    return sum(training_steps(run, datasets[run.dataset])[1] for run in plan.runs)


# --- counts and sizes ---


def _block_settings(dataset: dict, block: dict) -> set:
    """(targets, rank, α, scaling, init, lr, λ, method) of a grid block's runs on ``dataset``:
    targets only for a deep dataset, and a fixed-budget block's rank from its ``rank_budget``."""
    methods = block.get("method") or [registry.default_method()]
    return {(*s, method) for s in _block_lora_settings(dataset, block) for method in methods}


def _block_lora_settings(dataset: dict, block: dict) -> set:
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


def run_counts(config: dict) -> dict[str, Counter]:
    """Per dataset, the number of runs by kind: ``(method, rank, init)`` for an adapter method
    or ``("full",)``.

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
        kinds = Counter((method, rank, init) for _, rank, _, _, init, _, _, method in settings)
        kinds = Counter({kind: n * replicated for kind, n in kinds.items()})
        if full.get("enabled", False):
            kinds[("full",)] = len(full.get("lr", [])) * replicated
        counts[name] = kinds
    return counts


def generation_bytes(dataset: dict) -> float:
    """Peak memory of a job generating and saving a dataset: float64 W₀, ΔW* and their sum, the
    splits' x and y with the noise and temporaries of y's sum, then float32 copies of it all
    (and, while saving, the serialized bytes of those copies). A deep model's teacher also
    holds one layer's activations of the largest split."""
    architecture = describe(dataset)
    d_in, d_out = architecture.inputs, architecture.outputs
    weights = architecture.linear_weights()
    samples, largest = split_rows(dataset)
    stored = 2 * weights + samples * (d_in + d_out)
    drawing = FLOAT64 * (3 * weights + samples * (d_in + d_out) + 4 * largest * d_out)
    if linear_modules(dataset):
        drawing += FLOAT64 * largest * architecture.activations() / architecture.n_layers
    return PROCESS_BYTES + max(drawing + FLOAT32 * stored, 2 * FLOAT32 * stored)


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
