"""Expand a config into runs: the main grid and each extra grid, times datasets and seeds.

This package never imports torch, so Snakemake can build the DAG of a large grid quickly.

A *run* is one training of one model. Its id is derived only from its parameters, for example
``lowrank__lora_r4_a8_standard_kaiming_lr0.001_s0`` or ``lowrank__full_lr0.001_s0``; a LoRA run
whose base bias trains has ``_biasall`` before the seed.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass


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

    @property
    def run_id(self) -> str:
        if self.method == "full":
            return f"{self.dataset}__full_lr{format_number(self.lr)}_s{self.seed}"
        ratio = f"_lrB{format_number(self.lr_ratio)}" if self.lr_ratio != 1 else ""
        bias = "_biasall" if self.bias == "all" else ""
        return (
            f"{self.dataset}__lora_r{self.rank}_a{format_number(self.alpha)}_{self.scaling}"
            f"_{self.init}_lr{format_number(self.lr)}{ratio}{bias}_s{self.seed}"
        )

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> RunSpec:
        return cls(**{k: v for k, v in data.items() if k != "run_id"})


GRID_AXES = ("rank", "alpha", "scaling", "init", "lr", "lr_ratio", "bias")


def grids(config: dict) -> list[dict]:
    """The main grid, then each of ``extra_grids`` with missing axes taken from the main grid.
    The main grid's bias is ``train.bias``; an extra grid may give its own."""
    main = {"lr_ratio": [1.0], "bias": [config["train"].get("bias", "none")], **config["grid"]}
    blocks = [{**main, "datasets": None}]
    for extra in config.get("extra_grids", []):
        blocks.append({**main, "datasets": None, **extra})
    return blocks


def expand_runs(config: dict) -> list[RunSpec]:
    """The LoRA runs (datasets × seeds × rank × α × scaling × init × lr × lr_ratio × bias, for
    the main grid and each extra grid, without repeats) followed by the full fine-tuning runs
    (datasets × seeds × lr), in a fixed order."""
    train = config["train"]
    common = {
        "epochs": train["epochs"],
        "batch_size": train.get("batch_size"),
        "device": train.get("device", "auto"),
    }
    runs: list[RunSpec] = []
    for dataset, grid in itertools.product(config["datasets"], grids(config)):
        if grid["datasets"] is not None and dataset["name"] not in grid["datasets"]:
            continue
        for seed in config["seeds"]:
            for rank, alpha, scaling, init, lr, lr_ratio, bias in itertools.product(
                *(grid[axis] for axis in GRID_AXES)
            ):
                runs.append(
                    RunSpec(
                        dataset=dataset["name"],
                        method="lora",
                        seed=seed,
                        lr=lr,
                        rank=rank,
                        alpha=alpha,
                        scaling=scaling,
                        init=init,
                        lr_ratio=lr_ratio,
                        bias=bias,
                        dropout=train.get("lora_dropout", 0.0),
                        **common,
                    )
                )
    full = config.get("full_finetune", {})
    if full.get("enabled", False):
        for dataset in config["datasets"]:
            for seed in config["seeds"]:
                for lr in full["lr"]:
                    runs.append(
                        RunSpec(
                            dataset=dataset["name"],
                            method="full",
                            seed=seed,
                            lr=lr,
                            bias=train.get("bias", "none"),
                            **common,
                        )
                    )
    return list(dict.fromkeys(runs))
