"""Group runs into cohorts that train together as one tensor program
(:mod:`lorasweep.training.batched`), and cut each cohort into waves that fit a memory budget.

Runs share a cohort when they share everything the engine keeps shared (:func:`cohort_key`): the
dataset (its data and its residual cache), the model's shape (method and rank, and for a deep
model's LoRA the modules its ``targets`` select), the number of epochs, the mini-batch size, the
bias policy, the dropout rate and the device setting. What differs between runs of a cohort (α
and the scaling rule, learning rate, LoRA+ ratio, init, seed) lives in per-run tensors.

Ranks are grouped, not padded: padding every run of a cohort to the largest rank spends
multiply-adds on zeros (for the default grid, ranks 1…64 padded to 64 do 3.5× the useful work;
``benchmarks/engine.py`` measures it), and the padded width would depend on which runs share the
cohort, so a run's rounding would too.

This module never imports torch: Snakemake plans cohorts while it builds the DAG.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from lorasweep.models.names import linear_modules, select
from lorasweep.options import test_size
from lorasweep.planning.resources import network_shape, split_rows
from lorasweep.planning.runs import RunSpec

ENGINES = ("batched", "single")
"""``batched`` trains each cohort as one tensor program; ``single`` trains run after run with the
reference loop (:func:`lorasweep.training.loop.train_run`)."""

BATCHED_METHODS = ("lora", "full")
"""Methods the engine batches, on every dataset kind; any other run trains on the single-run
path."""

FLOAT_BYTES = 4
ALIGN = 64
"""Each tensor of a run's slot starts at a multiple of this many elements
(:class:`lorasweep.training.stacked.SlotLayout`)."""

CHUNK_ELEMENTS = 1 << 16
"""The losses, single-run and batched, process rows in chunks of at most this many output
elements per run (256 KiB in float32), so that no split- or mini-batch-sized temporary is formed and
each chunk stays in the CPU's cache while its loss and gradients are formed (the size chosen
from timings of 2¹⁴…2²⁰ at 4096×4096; ``make bench`` measures the result)."""

WAVE_STEP_COST = 2.5e6
"""Cost of dispatching one step of one wave (about twenty operations), in multiply-adds: the
dispatch time times the rate the batched products reach on one CPU core, a calibration."""

ERROR_ELEMENT_COST = 50
"""Cost, in multiply-adds, of each element of a run's error per step: forming it, its loss,
the passes of both gradient products over it and the optimizer's share (calibrated on a
rank-1 step at 256×256, mini-batch 128)."""

DEFAULT_BUDGET_MIB = {"cpu": 1024, "cuda": None}
"""Memory a wave may allocate beyond its dataset when ``train.memory_budget_mib`` is null: 1 GiB
on the CPU, and on a GPU a quarter of the device's memory (``None`` here: only the training job
can ask the device)."""


def batchable(run: RunSpec, dataset: dict | None = None) -> bool:
    """Whether the batched engine trains this run: a LoRA or full fine-tuning of a dataset's
    single linear layer or of a deep dataset's network, on a dataset (its config entry or spec,
    where known) that does not ask for the seed tutorial's own arithmetic (``compat:
    tutorial``, computed by the reference loss). Other runs fall back to the single-run
    path."""
    if dataset is not None and dataset.get("compat", "none") == "tutorial":
        return False
    return run.method in BATCHED_METHODS


def effective_engine(run: RunSpec, engine: str, dataset: dict | None = None) -> str:
    """The engine that trains ``run`` when a job is asked for ``engine``: runs the batched
    engine cannot train go to the single-run path."""
    return "batched" if engine == "batched" and batchable(run, dataset) else "single"


def cohort_key(run: RunSpec) -> tuple:
    """What runs of one cohort share. PiSSA runs form cohorts apart from the others: each has its
    own frozen weight W₀ − s·B₀A₀, so its own residual rather than the dataset's. A deep model's
    LoRA runs share their ``targets`` (the modules their slots hold)."""
    return (
        run.data,
        run.method,
        run.rank,
        getattr(run, "targets", None),
        run.init == "pissa",
        run.epochs,
        run.batch_size,
        run.bias,
        run.dropout,
        run.device,
    )


def order_key(run: RunSpec, n_train: int) -> int | None:
    """Runs with the same key draw the same mini-batches: the shuffle order depends only on the
    seed and the dataset (:func:`lorasweep.training.loop.mini_batches`), and a full-batch run sees
    the split in order."""
    batch_size = run.batch_size or n_train
    return run.seed if batch_size < n_train else None


def plan_cohorts(
    runs: Iterable[RunSpec], engine: str = "batched", datasets: Mapping[str, dict] | None = None
) -> list[list[RunSpec]]:
    """The runs grouped into cohorts, in order of first appearance. With ``engine="single"``,
    or for a run the engine does not stack (:func:`batchable`, given its dataset's entry in
    ``datasets`` where known), a cohort holds one run."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; allowed: {', '.join(ENGINES)}")
    groups: dict[object, list[RunSpec]] = {}
    for index, run in enumerate(runs):
        dataset = datasets.get(run.dataset) if datasets is not None else None
        batched = effective_engine(run, engine, dataset) == "batched"
        key = cohort_key(run) if batched else ("alone", index)
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def aligned(elements: int) -> int:
    """``elements`` rounded up to a multiple of :data:`ALIGN`: the room one tensor takes in a
    run's slot."""
    return -(-elements // ALIGN) * ALIGN


def slot_elements(run: RunSpec, d_in: int, d_out: int) -> int:
    """Length of one run's slot: every tensor it trains, each aligned to :data:`ALIGN`."""
    if run.method == "full":
        return aligned(d_out * d_in) + aligned(d_out)
    bias = aligned(d_out) if run.bias == "all" else 0
    return aligned(run.rank * d_in) + aligned(run.rank * d_out) + bias


def rows_per_chunk(d_out: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(d_out, 1))


def network_slot_elements(run: RunSpec, dataset: dict) -> int:
    """Length of one run's slot on a deep dataset: each tensor it trains, aligned to
    :data:`ALIGN` (every A, B and trained bias of the modules its ``targets`` select for LoRA;
    every weight, bias and norm of the network for full fine-tuning)."""
    modules = linear_modules(dataset)
    if run.method == "full":
        norms = (2 if dataset["kind"] == "transformer" else 1) * dataset["n_layers"]
        if dataset["kind"] == "mlp":
            norms -= 1
        tensors = [m.in_features * m.out_features for m in modules]
        tensors += [m.out_features for m in modules] + [dataset["d_model"]] * (2 * norms)
        return sum(aligned(t) for t in tensors)
    chosen = select(modules, run.targets or "all")
    bias = [aligned(m.out_features) for m in chosen] if run.bias == "all" else []
    adapters = [aligned(run.rank * m.in_features) + aligned(run.rank * m.out_features)
                for m in chosen]  # fmt: skip
    return sum(adapters) + sum(bias)


def source_rows(dataset: dict) -> int:
    """Rows of the dataset's source-task split (0 where it has none)."""
    return (dataset.get("source") or {}).get("n", 0)


def step_and_widest_rows(run: RunSpec, dataset: dict) -> tuple[int, int]:
    """A step's rows, and the most rows one pass reads: a step, or a whole held-out split
    evaluated at once."""
    batch_size, _ = training_steps(run, dataset)
    return batch_size, max(batch_size, dataset["n_val"], test_size(dataset), source_rows(dataset))


def network_run_bytes(run: RunSpec, dataset: dict) -> int:
    """Bytes one run of a deep dataset adds to a cohort's wave: its slot seven times
    (parameters, gradients as computed and as stored, Adam's two moments and two temporaries);
    its rows of x and y for a step and for a whole split; a step's activations three times (kept
    for the backward pass, and their gradients); a whole split's activations of one layer while
    it is evaluated; its own copy of the network while the wave is built; and with PiSSA its
    own frozen weights of the modules it adapts."""
    batch_size, widest = step_and_widest_rows(run, dataset)
    inputs, outputs, activations, _ = network_shape(dataset)
    elements = 7 * network_slot_elements(run, dataset)
    elements += network_slot_elements(dataclasses.replace(run, method="full"), dataset)
    elements += (batch_size + widest) * (inputs + outputs)
    elements += 3 * batch_size * activations + 2 * widest * activations / dataset["n_layers"]
    if run.method == "lora" and run.init == "pissa":
        chosen = select(linear_modules(dataset), run.targets or "all")
        elements += sum(m.in_features * m.out_features for m in chosen)
    return int(FLOAT_BYTES * elements)


def run_bytes(run: RunSpec, dataset: dict) -> int:
    """Bytes one run adds to a cohort's wave, beyond the dataset every run shares; a deep
    dataset's run: :func:`network_run_bytes`.

    Per run: the slot's parameters, gradients, Adam's two moments and its two temporaries; a
    step's rows of x and of the target, gathered per run (and masked, with dropout); the adapter's
    activations U, s·U and their gradient for the step's rows; the error of one row chunk, twice
    (the error and its square); and with PiSSA the run's own residual of every split.
    """
    if linear_modules(dataset):
        return network_run_bytes(run, dataset)
    d_in, d_out = dataset["in_features"], dataset["out_features"]
    batch_size, widest = step_and_widest_rows(run, dataset)
    rows = min(widest, rows_per_chunk(d_out))
    elements = 6 * slot_elements(run, d_in, d_out)
    elements += batch_size * (d_in + d_out)
    width = d_in if run.method == "full" else run.rank
    elements += 3 * widest * width + 2 * rows * d_out
    if run.method == "lora" and run.init == "pissa":
        elements += (split_rows(dataset)[0] + source_rows(dataset)) * d_out
    return FLOAT_BYTES * elements


def budget_bytes(budget_mib: float | None, device_type: str) -> int | None:
    """The budget in bytes: ``budget_mib``, or the device's default (:data:`DEFAULT_BUDGET_MIB`;
    ``None`` where the caller must ask the device)."""
    if budget_mib is None:
        budget_mib = DEFAULT_BUDGET_MIB.get(device_type)
    return None if budget_mib is None else int(budget_mib * 2**20)


SHARED_ORDER_RUNS = 4
"""Runs that draw the same mini-batches get waves of their own once there are this many of them:
a wave whose runs share each step's rows gathers them once, where a mixed wave gathers them
per run."""


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


def by_order(run: RunSpec, n_train: int) -> tuple[int, int]:
    """A sort key that puts runs drawing the same mini-batches (:func:`order_key`) next to each
    other."""
    key = order_key(run, n_train)
    return (0, 0) if key is None else (1, key)


def training_steps(run: RunSpec, dataset: dict) -> tuple[int, int]:
    """A run's mini-batch size and its number of optimizer steps over all epochs."""
    n = dataset["n_train"]
    batch_size = min(run.batch_size or n, n)
    return batch_size, run.epochs * math.ceil(n / batch_size)


def run_cost(run: RunSpec, dataset: dict) -> float:
    """A run's share of a cohort's cost, in multiply-add equivalents: per step, 2.5·b·r·(d_in +
    d_out) multiply-adds for LoRA against the cached residual (forward, error, and the three
    gradient products), 2·b·d_in·d_out for full fine-tuning (forward and weight gradient), plus
    :data:`ERROR_ELEMENT_COST` per element of its error. A deep dataset's run: three forward
    passes' multiply-adds per sample (forward, and the backward pass through every module),
    plus the adapter's 2.5·r·(d_in + d_out) per token of each module it adapts, plus
    :data:`ERROR_ELEMENT_COST` per value of each module's output."""
    batch_size, steps = training_steps(run, dataset)
    modules = linear_modules(dataset)
    if modules:
        tokens = dataset.get("seq_len") or 1
        products = 3 * network_shape(dataset)[3]
        if run.method == "lora":
            chosen = select(modules, run.targets or "all")
            products += (
                2.5 * tokens * run.rank * sum(m.in_features + m.out_features for m in chosen)
            )
        values = tokens * sum(m.out_features for m in modules)
        return steps * batch_size * (products + ERROR_ELEMENT_COST * values)
    d_in, d_out = dataset["in_features"], dataset["out_features"]
    if run.method == "full":
        products = 2 * batch_size * d_in * d_out
    else:
        products = 2.5 * batch_size * (run.rank or 1) * (d_in + d_out)
    return steps * (products + ERROR_ELEMENT_COST * batch_size * d_out)


def estimated_cost(run: RunSpec, dataset: dict) -> float:
    """Rough relative cost of a run: steps × (fixed per-step overhead + multiply-adds per step).

    LoRA runs train against the cached base product, so a step costs about 3·b·r·(d_in + d_out)
    multiply-adds; full fine-tuning about 3·b·d_in·d_out. The overhead term stands for the
    Python and dispatch time each step pays whatever its size. A deep model's step runs
    the whole network forward and back, LoRA or not: 3·b·tokens·Σ d_in·d_out over its linear
    modules, and the overhead once per module.
    """
    batch_size, steps = training_steps(run, dataset)
    modules = linear_modules(dataset)
    if modules:
        tokens = dataset.get("seq_len") or 1
        weights = sum(m.in_features * m.out_features for m in modules)
        return steps * (3e5 * len(modules) + 3 * batch_size * tokens * weights)
    d_in, d_out = dataset["in_features"], dataset["out_features"]
    width = d_in * d_out if run.method == "full" else run.rank * (d_in + d_out)
    return steps * (3e5 + 3 * batch_size * width)


def cohort_cost(cohort: Sequence[RunSpec], dataset: dict) -> float:
    """Estimated cost of training ``cohort`` together: its runs' :func:`run_cost` plus the
    dispatch of each step once per wave (about one wave per data order,
    :data:`WAVE_STEP_COST`). A deep network's step dispatches about that many operations per
    linear module (an estimate, not calibrated on a deep grid)."""
    if not batchable(cohort[0], dataset):
        return sum(estimated_cost(run, dataset) for run in cohort)
    _, steps = training_steps(cohort[0], dataset)
    waves = len({order_key(run, dataset["n_train"]) for run in cohort})
    modules = max(len(linear_modules(dataset)), 1)
    return steps * WAVE_STEP_COST * modules * waves + sum(run_cost(run, dataset) for run in cohort)


@dataclass(frozen=True)
class Progress:
    """Runs and cohorts a job has trained, for its log line with an ETA from estimated costs."""

    runs_done: int
    runs_total: int
    cohorts_done: int
    cohorts_total: int
    cost_done: float
    cost_total: float
    elapsed_s: float

    def eta_s(self) -> float:
        if self.cost_done <= 0:
            return math.nan
        return self.elapsed_s * (self.cost_total - self.cost_done) / self.cost_done

    def line(self, job: str) -> str:
        eta = self.eta_s()
        eta_text = "?" if math.isnan(eta) else f"{eta:.0f} s"
        return (
            f"{job}: {self.runs_done}/{self.runs_total} runs, "
            f"{self.cohorts_done}/{self.cohorts_total} cohorts, "
            f"{self.elapsed_s:.0f} s elapsed, ETA {eta_text}"
        )
