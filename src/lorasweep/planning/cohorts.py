"""Group runs into cohorts that train together as one tensor program
(:mod:`lorasweep.training.batched`). What a cohort costs and how it is cut into waves that fit a
memory budget is :mod:`lorasweep.planning.resources`'s one cost model and one memory model.

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

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lorasweep.models import registry
from lorasweep.options import ENGINE_METHODS
from lorasweep.planning.runs import RunSpec

ENGINES = ("batched", "single")
"""``batched`` trains each cohort as one tensor program; ``single`` trains run after run, each a
cohort of one of the same engine (a run's numbers do not depend on its cohort, so the two give
the same bits). The single-run loop (:func:`lorasweep.training.loop.train_run`) is the tests'
autograd oracle, not an engine."""

BATCHED_METHODS = ENGINE_METHODS
"""Methods the engine batches, on every dataset kind; a method trained through PEFT trains one
run at a time (engine ``peft``, :mod:`lorasweep.training.peft_trainer`)."""

ALIGN = 64
"""Each tensor of a run's slot starts at a multiple of this many elements
(:class:`lorasweep.training.stacked.SlotLayout`)."""

CHUNK_ELEMENTS = 1 << 16
"""The losses, single-run and batched, process rows in chunks of at most this many output
elements per run (256 KiB in float32), so that no split- or mini-batch-sized temporary is formed and
each chunk stays in the CPU's cache while its loss and gradients are formed (the size chosen
from timings of 2¹⁴…2²⁰ at 4096×4096; ``make bench`` measures the result)."""


def batchable(run: RunSpec, dataset: dict | None = None) -> bool:
    """Whether the batched engine trains this run: a registered method on a dataset's single
    linear layer or a deep dataset's network, ``compat: tutorial`` included (its runs take the
    generic objective, which reproduces the tutorial's float32 arithmetic). ``dataset`` (its
    config entry or spec) is accepted for the planners that pass it."""
    return run.method in BATCHED_METHODS


def effective_engine(run: RunSpec, engine: str, dataset: dict | None = None) -> str:
    """The engine that trains ``run`` when a job is asked for ``engine``: ``peft`` for a method
    trained through PEFT, else ``single`` (cohorts of one) for a run the batched engine could
    not stack."""
    if registry.method(run.method).through_peft:
        return "peft"
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
        registry.replaces_base(run.init),
        run.epochs,
        run.batch_size,
        run.bias,
        run.dropout,
        run.device,
    )


def order_key(run: RunSpec, n_train: int) -> int | None:
    """Runs with the same key draw the same mini-batches: the shuffle order depends only on the
    seed and the dataset (:func:`lorasweep.training.records.epoch_order`), and a full-batch run sees
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


def rows_per_chunk(d_out: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(d_out, 1))


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
