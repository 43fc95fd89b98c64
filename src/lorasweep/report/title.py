"""The report's title: the config's ``report.title``, or one derived from what the config runs.

The default config (config/config.yaml) names its own study in ``report.title``. A
``--configfile`` or ``--config`` that changes what runs without giving a title must not inherit
that one, so :func:`drop_inherited_title` removes it and :func:`report_title` derives a title from
the datasets, their shapes and task ranks, and the methods instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from lorasweep.models import registry

STUDY_KEYS = ("datasets", "grid", "extra_grids", "full_finetune")
NAMED_DATASETS = 3
LISTED_RANKS = 4


def drop_inherited_title(config: dict, overrides: Mapping) -> dict:
    """Remove ``report.title`` from ``config`` (in place) when ``overrides`` (what the user's
    ``--configfile`` and ``--config`` give, merged) change the study but give no title."""
    report = overrides.get("report")
    gives_title = isinstance(report, Mapping) and "title" in report
    if not gives_title and any(key in overrides for key in STUDY_KEYS):
        config.get("report", {}).pop("title", None)
    return config


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _shape(dataset: Mapping) -> str:
    kind = dataset["kind"]
    if kind == "transformer":
        return f"transformer, d_model {dataset['d_model']}, {_count(dataset['n_layers'], 'block')}"
    if kind == "mlp":
        shape = f"{dataset['in_features']}→{dataset['out_features']}"
        return f"MLP {shape}, {_count(dataset['n_layers'], 'layer')}"
    return f"{dataset['in_features']}→{dataset['out_features']}"


def _describe(dataset: Mapping) -> str:
    if dataset["kind"] == "noise":
        target = "noise targets"
    else:
        target = f"task rank {dataset.get('task_rank', 0)}"
    return f"{dataset['name']} ({_shape(dataset)}, {target})"


def _ranks(config: Mapping) -> list[int]:
    blocks = [config.get("grid", {}), *config.get("extra_grids", [])]
    return sorted({int(r) for block in blocks for r in block.get("rank", [])})


def derived_title(config: Mapping) -> str:
    """A title naming the methods, LoRA's ranks and every dataset (shape and task rank)."""
    ranks = _ranks(config)
    main = config.get("grid", {}).get("method", [registry.default_method()])
    named = {m for extra in config.get("extra_grids", []) for m in extra.get("method", main)}
    named |= set(main)
    lora = " and ".join(m.label for m in registry.METHOD_RECORDS if m.name in named)
    if ranks:
        listed = ", ".join(map(str, ranks)) if len(ranks) <= LISTED_RANKS else None
        span = listed or f"{ranks[0]}–{ranks[-1]}"
        lora += f" (rank{'s' if len(ranks) > 1 else ''} {span})"
    full = config.get("full_finetune", {}).get("enabled", False)
    methods = f"{lora} vs full fine-tuning" if full else lora
    datasets = [_describe(d) for d in config.get("datasets", [])]
    if len(datasets) > NAMED_DATASETS:
        rest = len(datasets) - NAMED_DATASETS
        datasets = [*datasets[:NAMED_DATASETS], _count(rest, "more dataset")]
    if not datasets:
        return methods
    listed = (
        datasets[0] if len(datasets) == 1 else ", ".join(datasets[:-1]) + " and " + datasets[-1]
    )
    return f"{methods} on {listed}"


def report_title(config: Mapping) -> str:
    """``report.title`` where the config gives one, else :func:`derived_title`."""
    return config.get("report", {}).get("title") or derived_title(config)
