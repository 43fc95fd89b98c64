"""The figure registry: each figure is declared once, by the decorator on its drawing function.

A declaration gives the figure's name (the function's), the tables it reads, and when a config
has the data for it. Its caption is ``workflow/report/captions/<name>.rst``. The workflow's one
``figure`` rule, the report and :func:`figures_for` all read this registry, so adding a figure
means one decorated function and one caption file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lorasweep.options import SINGLE_LAYER_KINDS
from lorasweep.planning.runs import grids

RUN_TABLES = ("runs", "epochs")
SELECTED_TABLES = ("runs", "epochs", "selections")
"""What a figure of the runs at chosen settings reads (``selections``: :mod:`.chosen`)."""
GEOMETRY_TABLES = ("runs", "epochs", "geometry", "subspace_pairs")

Condition = Callable[[dict], bool]
"""``condition(config) -> bool``: whether a config has the data a figure needs."""


@dataclass
class Tables:
    """The tables a figure is drawn from; all but ``runs`` and ``epochs`` only for the figures
    that declare them."""

    runs: object
    epochs: object
    geometry: object | None = None
    subspace_pairs: object | None = None
    lr_optima: object | None = None
    intruders: object | None = None
    intruder_means: object | None = None
    forgetting: object | None = None
    gaps: object | None = None
    selections: object | None = None
    methods: object | None = None


@dataclass(frozen=True)
class Figure:
    name: str
    draw: Callable[[Tables], object]
    tables: tuple[str, ...]
    condition: Condition


FIGURES: dict[str, Figure] = {}
"""Every registered figure by name, in report order (the order of registration)."""


def always(config: dict) -> bool:
    return True


def varies(*axes: str) -> Condition:
    """True when some grid block has at least two values of each of ``axes`` (for example the
    α × lr heatmap needs two α and two learning rates in one block)."""

    def condition(config: dict) -> bool:
        return any(all(len(set(block[a])) >= 2 for a in axes) for block in grids(config))

    return condition


def task_ranks_vary(config: dict) -> bool:
    """Two lowrank datasets of different task ranks, and a rank sweep."""
    ranks = {d.get("task_rank") for d in config["datasets"] if d["kind"] == "lowrank"}
    return len(ranks) >= 2 and varies("rank")(config)


def has_single_layer(config: dict) -> bool:
    """A lowrank or noise dataset: what the figures about one adapted layer need."""
    return any(d["kind"] in SINGLE_LAYER_KINDS for d in config["datasets"])


def all_of(*conditions: Condition) -> Condition:
    def condition(config: dict) -> bool:
        return all(check(config) for check in conditions)

    return condition


def lr_swept(config: dict) -> bool:
    """Some LoRA grid block, or full fine-tuning, has at least two learning rates."""
    full = config.get("full_finetune", {})
    full_swept = full.get("enabled", False) and len(set(full.get("lr", []))) >= 2
    return full_swept or varies("lr")(config)


def has_source_task(config: dict) -> bool:
    """Some dataset declares a source task."""
    return any(d.get("source") is not None for d in config["datasets"])


def figure(tables: tuple[str, ...] = RUN_TABLES, when: Condition = always):
    """Register the decorated drawing function as a figure of the same name."""

    def register(draw: Callable[[Tables], object]) -> Callable[[Tables], object]:
        if draw.__name__ in FIGURES:
            raise ValueError(f"figure {draw.__name__!r} is registered twice")
        FIGURES[draw.__name__] = Figure(draw.__name__, draw, tables, when)
        return draw

    return register


def figures_for(config: dict) -> list[str]:
    """The figures this config has the data for, in report order."""
    import lorasweep.figures  # noqa: F401  (registers every figure)

    return [name for name, spec in FIGURES.items() if spec.condition(config)]
