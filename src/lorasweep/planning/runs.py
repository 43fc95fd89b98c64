"""Expand a config into runs: the main grid and each extra grid, times datasets and seeds.

This package never imports torch, so Snakemake can build the DAG of a large grid quickly.

A *run* is one training of one model. Its id is derived only from its parameters, for example
``lowrank__lora_r4_a8_standard_kaiming_lr0.001_s0`` or ``lowrank__full_lr0.001_s0``; a DoRA
run (the grid's ``method`` axis) starts ``lowrank__dora_r4`` where LoRA's starts
``lowrank__lora``; an adapter run whose base bias trains (``bias: lora_only``) has ``_biasall``
before the seed (the id kept from the option's former name ``all``), and a deep model's adapter
run names its targets, ``tf__lora-mlp_r4_a8_standard_kaiming_lr0.001_s0``. A run on a replicate
of the task (a ``task_seeds`` entry other than 0) ends in ``_t<task seed>``, and trains on that
replicate's dataset files (:func:`replicate_name`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from lorasweep.models import registry
from lorasweep.models.names import linear_modules, matrix_types, pattern_label, select
from lorasweep.options import BIAS_ALIASES, ENGINE_METHODS

ENGINE_ADAPTERS = tuple(m for m in ENGINE_METHODS if registry.is_adapter(m))


def format_number(value: float | int) -> str:
    """Shortest exact text for a number: 8 → ``8``, 8.0 → ``8``, 0.001 → ``0.001``."""
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers here")
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's result (except the data, named by ``dataset``)."""

    dataset: str
    method: str
    seed: int
    lr: float
    epochs: int
    batch_size: int | None
    bias: str
    device: str
    rank: int | None = None
    alpha: float | None = None
    scaling: str | None = None
    init: str | None = None
    lr_ratio: float = 1.0
    dropout: float = 0.0
    targets: str | None = None
    """The linear modules of a deep model that get LoRA: a preset or a regular expression
    (:mod:`lorasweep.models.names`). None for the single-layer kinds and for full FT."""
    task_seed: int = 0
    """The replicate of the dataset's task the run trains on (``task_seeds``)."""
    settings: str | None = None
    """A method trained through PEFT: the config's ``method_settings`` for it, as canonical
    JSON (None where it gives none)."""

    @property
    def record(self) -> registry.Method:
        """The run's method record (:mod:`lorasweep.models.registry`)."""
        return registry.method(self.method)

    @property
    def adapter(self) -> bool:
        """Whether the run trains an adapter (every method but full fine-tuning)."""
        return self.record.adapter

    @property
    def data(self) -> str:
        """The name of the dataset files the run trains on (:func:`replicate_name`)."""
        return replicate_name(self.dataset, self.task_seed)

    @property
    def run_id(self) -> str:
        replicate = f"_t{self.task_seed}" if self.task_seed else ""
        if not self.adapter:
            tag = self.record.run_tag()
            return f"{self.dataset}__{tag}_lr{format_number(self.lr)}_s{self.seed}{replicate}"
        if self.record.through_peft:
            return self._peft_run_id(replicate)
        ratio = f"_lrB{format_number(self.lr_ratio)}" if self.lr_ratio != 1 else ""
        where = f"-{pattern_label(self.targets)}" if self.targets is not None else ""
        bias = "_biasall" if self.bias == "lora_only" else ""
        return (
            f"{self.dataset}__{self.record.run_tag()}{where}_r{self.rank}_a{format_number(self.alpha)}"
            f"_{self.scaling}_{self.init}_lr{format_number(self.lr)}{ratio}{bias}_s{self.seed}"
            f"{replicate}"
        )

    def _peft_run_id(self, replicate: str) -> str:
        """``lowrank__loha_r4_a8_lr0.01_s0``: rank and α where the method has them, and a
        digest of its ``method_settings`` where the config gives some."""
        where = f"-{pattern_label(self.targets)}" if self.targets is not None else ""
        rank = f"_r{self.rank}" if self.rank is not None else ""
        alpha = f"_a{format_number(self.alpha)}" if self.alpha is not None else ""
        settings = ""
        if self.settings is not None:
            settings = "_m" + hashlib.sha256(self.settings.encode()).hexdigest()[:8]
        return (
            f"{self.dataset}__{self.record.run_tag()}{where}{rank}{alpha}{settings}"
            f"_lr{format_number(self.lr)}_s{self.seed}{replicate}"
        )

    def as_dict(self) -> dict:
        """The run id and every field; ``targets`` and ``settings`` only where they are set and
        ``task_seed`` only where it is not 0, so a run's record is what it was before deep
        models, replicated tasks and PEFT-trained methods existed."""
        fields = asdict(self)
        for name in ("targets", "settings"):
            if fields[name] is None:
                del fields[name]
        if self.task_seed == 0:
            del fields["task_seed"]
        return {"run_id": self.run_id, **fields}

    @classmethod
    def from_dict(cls, data: dict) -> RunSpec:
        return cls(**{k: v for k, v in data.items() if k != "run_id"})


class JobRuns:
    """A training job's runs (dicts from :meth:`RunSpec.as_dict`) as a rule parameter.

    Snakemake leaves a parameter of a type it does not know out of its params change check, and
    prints every changed parameter whole; the rule passes :meth:`digest` beside it, so the check
    still sees every change and its message stays one short line per job.
    """

    def __init__(self, runs) -> None:
        self.runs = [dict(run) for run in runs]

    def digest(self) -> str:
        text = json.dumps(self.runs, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def replicate_name(dataset: str, task_seed: int) -> str:
    """The name of a dataset's replicate for ``task_seed``, under which its files are stored:
    the dataset's own name for task seed 0 (today's data), ``<name>.t<task seed>`` otherwise
    (a dataset name has no '.', so no two replicates share a name)."""
    return dataset if task_seed == 0 else f"{dataset}.t{task_seed}"


def replicates(config: dict) -> dict[str, dict]:
    """Replicate name → its dataset entry, with ``task_seed`` where it is not 0, for every
    dataset and every one of ``task_seeds`` (default [0]), in that order."""
    return {
        replicate_name(entry["name"], task_seed): (
            {**entry, "task_seed": task_seed} if task_seed else entry
        )
        for entry in config["datasets"]
        for task_seed in config.get("task_seeds", [0])
    }


SETTING_AXES = ("alpha", "scaling", "init", "lr", "lr_ratio", "bias")


def grids(config: dict) -> list[dict]:
    """The main grid, then each of ``extra_grids`` with missing axes taken from the main grid.

    The main grid's bias is ``train.bias``; an extra grid may give its own. ``targets`` is None
    where no block gives it (deep datasets then adapt ``all``); an extra grid with
    ``rank_budget`` has no ``rank`` axis of its own."""
    main = {
        "method": [registry.default_method()],
        "lr_ratio": [1.0],
        "bias": [config["train"].get("bias", "none")],
        "targets": None,
        "rank_budget": None,
        **config["grid"],
    }
    blocks = [{**main, "datasets": None}]
    for extra in config.get("extra_grids", []):
        block = {**main, "datasets": None, **extra}
        if block["rank_budget"] is not None:
            block["rank"] = []
        blocks.append(block)
    return blocks


def budget_rank(dataset: dict, pattern: str, budget: int) -> int:
    """The rank that holds rank × (number of matrix types adapted) at ``budget``."""
    types = matrix_types(select(linear_modules(dataset), pattern))
    if not types:
        raise ValueError(f"targets {pattern!r} adapt no module of dataset {dataset['name']!r}")
    return budget // len(types)


def lora_settings(dataset: dict, block: dict) -> Iterator[tuple]:
    """(targets, rank, α, scaling, init, lr, λ, bias) of a grid block's LoRA runs on a dataset: the
    full product, with ``targets`` None for the single-layer kinds and, in a fixed-budget
    block, each target set's rank from :func:`budget_rank`."""
    deep = bool(linear_modules(dataset))
    if block["rank_budget"] is not None and not deep:
        raise ValueError(f"rank_budget applies to deep datasets only, not {dataset['name']!r}")
    for pattern in (block["targets"] or ["all"]) if deep else [None]:
        ranks = block["rank"]
        if block["rank_budget"] is not None:
            ranks = [budget_rank(dataset, pattern, block["rank_budget"])]
        yield from itertools.product([pattern], ranks, *(block[a] for a in SETTING_AXES))


def method_settings(config: dict, method: str) -> str | None:
    """The config's ``method_settings`` for ``method`` as canonical JSON, None where it gives
    none."""
    settings = config.get("method_settings", {}).get(method)
    return json.dumps(settings, sort_keys=True, separators=(",", ":")) if settings else None


def method_run(run: RunSpec, config: dict) -> RunSpec:
    """``run`` (built from a grid's LoRA axes) as its method trains it: a method trained
    through PEFT keeps its rank and α only where it has them, and has no scaling rule, init,
    LoRA+ ratio or dropout; it carries its ``method_settings``."""
    record = run.record
    if not record.through_peft:
        return run
    if run.bias != "none":
        raise ValueError(
            f"method {run.method!r} trains through PEFT without the base bias; "
            f"bias: {run.bias} is allowed for {', '.join(ENGINE_ADAPTERS)} only"
        )
    return dataclasses.replace(
        run,
        rank=run.rank if record.rank_keyword else None,
        alpha=run.alpha if record.alpha_keyword else None,
        scaling=None,
        init=None,
        lr_ratio=1.0,
        dropout=0.0,
        settings=method_settings(config, run.method),
    )


def method_rates(block: dict, method: str) -> list[float]:
    """The learning rates a grid block searches for ``method``: its ``method_lr`` entry for the
    method where there is one, else the block's ``lr``."""
    return (block.get("method_lr") or {}).get(method, block["lr"])


def expand_runs(config: dict) -> list[RunSpec]:
    """The adapter runs (datasets × task seeds × seeds × method × targets × rank × α × scaling ×
    init × lr × lr_ratio × bias, for the main grid and each extra grid, without repeats)
    followed by the full fine-tuning runs (datasets × task seeds × seeds × lr), in a fixed order."""
    train = config["train"]
    common = {
        "epochs": train["epochs"],
        "batch_size": train.get("batch_size"),
        "device": train.get("device", "auto"),
    }
    task_seeds = config.get("task_seeds", [0])
    replicated = list(itertools.product(task_seeds, config["seeds"]))
    runs: list[RunSpec] = []
    for dataset, grid in itertools.product(config["datasets"], grids(config)):
        if grid["datasets"] is not None and dataset["name"] not in grid["datasets"]:
            continue
        settings = {
            method: list(lora_settings(dataset, {**grid, "lr": method_rates(grid, method)}))
            for method in grid["method"]
        }
        for task_seed, seed, method in itertools.product(
            task_seeds, config["seeds"], grid["method"]
        ):
            for targets, rank, alpha, scaling, init, lr, lr_ratio, bias in settings[method]:
                run = RunSpec(
                    dataset=dataset["name"],
                    method=method,
                    seed=seed,
                    lr=lr,
                    rank=rank,
                    alpha=alpha,
                    scaling=scaling,
                    init=init,
                    lr_ratio=lr_ratio,
                    bias=BIAS_ALIASES.get(bias, bias),
                    dropout=train.get("lora_dropout", 0.0),
                    targets=targets,
                    task_seed=task_seed,
                    **common,
                )
                runs.append(method_run(run, config))
    full = config.get("full_finetune", {})
    if full.get("enabled", False):
        for dataset in config["datasets"]:
            for task_seed, seed in replicated:
                for lr in full["lr"]:
                    runs.append(
                        RunSpec(
                            dataset=dataset["name"],
                            method=registry.full_name(),
                            seed=seed,
                            lr=lr,
                            bias=train.get("bias", "none"),
                            task_seed=task_seed,
                            **common,
                        )
                    )
    return list(dict.fromkeys(runs))


def rank_settings(runs: list[RunSpec]) -> dict[str, list[tuple[int, str]]]:
    """Replicate name (:func:`replicate_name`) → the (rank, bias) pairs of its LoRA runs,
    sorted: the settings at which :mod:`lorasweep.tables.oracles` fits its reduced-rank
    oracles."""
    settings: dict[str, set[tuple[int, str]]] = {}
    for run in runs:
        rank = run.record.update_rank(run.rank)
        if rank is not None:
            settings.setdefault(run.data, set()).add((rank, run.bias))
    return {name: sorted(pairs) for name, pairs in sorted(settings.items())}
