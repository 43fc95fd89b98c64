"""Config checks that turn every mistake into one line naming the key and what is allowed.

The JSON schema (``workflow/schemas/config.schema.yaml``) is applied by Snakemake's
``validate``; :func:`describe_schema_error` rewrites its error. :func:`check_semantics` adds the
rules a schema cannot express (ranks against layer sizes, unique names, safe paths, which keys
each dataset kind takes, and which modules ``shifted`` and ``targets`` select).
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from pathlib import PurePosixPath

from lorasweep.models.names import (
    LinearModule,
    describe_names,
    linear_modules,
    matrix_types,
    select,
)
from lorasweep.options import DEEP_KINDS, TARGET_PRESETS


class ConfigError(ValueError):
    """An invalid config. The message is one line: ``config error: <key>: <what is allowed>``."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"config error: {key}: {problem}")


def key_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def _schema_allowed(schema: dict) -> str:
    """What a (sub)schema allows, in words."""
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    kind = schema.get("type")
    words = {
        "integer": "an integer",
        "number": "a number",
        "string": "a string",
        "array": "a list",
        "object": "a mapping",
        "boolean": "true or false",
        "null": "null",
    }
    text = words.get(kind, str(kind)) if kind else "a value"
    if "minimum" in schema:
        text += f" >= {schema['minimum']}"
    if "exclusiveMinimum" in schema:
        text += f" > {schema['exclusiveMinimum']}"
    if "maximum" in schema:
        text += f" <= {schema['maximum']}"
    if "exclusiveMaximum" in schema:
        text += f" < {schema['exclusiveMaximum']}"
    return text


def describe_schema_error(error) -> ConfigError:
    """Turn a ``jsonschema.ValidationError`` into a one-line :class:`ConfigError`."""
    while error.parent is not None and error.parent.validator == "oneOf":
        error = error.parent
    path = list(error.absolute_path)
    key = key_path(path)
    kind, value, schema = error.validator, error.instance, error.schema
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(value) - set(allowed))
        name = unknown[0] if unknown else "?"
        guess = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        hint = f" (likely a typo of '{guess[0]}')" if guess else ""
        where = key_path([*path, name])
        return ConfigError(where, f"unknown key{hint}; allowed keys here: {', '.join(allowed)}")
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return ConfigError(key_path([*path, missing]), "required key is missing")
    if kind == "minItems":
        return ConfigError(key, "must not be empty")
    if kind == "uniqueItems":
        return ConfigError(key, f"{value!r} has duplicate entries; list each value once")
    if kind == "oneOf":
        options = " or ".join(_schema_allowed(option) for option in schema["oneOf"])
        return ConfigError(key, f"got {value!r}; allowed: {options}")
    if kind == "pattern":
        allowed = schema.get("description", f"text matching {schema['pattern']}")
        return ConfigError(key, f"got {value!r}; allowed: {allowed}")
    if kind in ("enum", "type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return ConfigError(key, f"got {value!r}; allowed: {_schema_allowed(schema)}")
    return ConfigError(key, error.message)


def check_semantics(config: dict) -> None:
    """Checks that span several keys. Run after schema validation (defaults filled in)."""
    results = PurePosixPath(config.get("results", "results"))
    if results.is_absolute() or ".." in results.parts:
        raise ConfigError("results", f"got {str(results)!r}; allowed: a relative path without '..'")

    names = Counter(d["name"] for d in config["datasets"])
    for name, count in names.items():
        if count > 1:
            raise ConfigError(
                "datasets", f"dataset name {name!r} is given {count} times; names must be unique"
            )

    datasets = {}
    for index, dataset in enumerate(config["datasets"]):
        check_dataset(f"datasets[{index}]", dataset)
        datasets[dataset["name"]] = dataset

    main = config["grid"]
    blocks = [("grid", main, None)] + [
        (f"extra_grids[{i}]", block, block.get("datasets"))
        for i, block in enumerate(config.get("extra_grids", []))
    ]
    for key, block, names in blocks:
        for name in names or []:
            if name not in datasets:
                raise ConfigError(
                    f"{key}.datasets", f"unknown dataset {name!r}; allowed: {', '.join(datasets)}"
                )
        check_block(key, block, main, [datasets[n] for n in names or datasets])


SHAPE_KEYS = ("in_features", "out_features", "d_model", "n_layers", "n_heads", "seq_len", "d_ff")
KIND_SHAPE_KEYS = {
    "lowrank": ("in_features", "out_features"),
    "noise": ("in_features", "out_features"),
    "mlp": ("in_features", "out_features", "d_model", "n_layers"),
    "transformer": ("d_model", "n_layers", "n_heads", "seq_len", "d_ff"),
}
"""The shape keys each dataset kind needs; the others do not apply to it."""


def check_dataset(key: str, dataset: dict) -> None:
    """A dataset's shape keys fit its kind, and its task fits its shape."""
    kind = dataset["kind"]
    needed = KIND_SHAPE_KEYS[kind]
    for name in needed:
        if name not in dataset:
            raise ConfigError(f"{key}.{name}", f"required key is missing for kind {kind}")
    deep_only = ("shifted",) if kind not in DEEP_KINDS else ()
    for name in (*SHAPE_KEYS, *deep_only):
        if name in dataset and name not in needed:
            raise ConfigError(
                f"{key}.{name}", f"does not apply to kind {kind}; its keys: {', '.join(needed)}"
            )
    task_rank = dataset.get("task_rank", 0)
    if kind == "lowrank":
        limit = min(dataset["in_features"], dataset["out_features"])
        if not 1 <= task_rank <= limit:
            raise ConfigError(
                f"{key}.task_rank",
                f"got {task_rank}; allowed: 1..{limit} = min(in_features, out_features)",
            )
    elif kind in DEEP_KINDS:
        check_network(key, dataset)


def check_network(key: str, dataset: dict) -> None:
    """A deep dataset's heads divide its width, ``shifted`` selects a module, and
    ``task_rank`` fits every shifted module."""
    if dataset["kind"] == "transformer" and dataset["d_model"] % dataset["n_heads"]:
        raise ConfigError(
            f"{key}.n_heads",
            f"got {dataset['n_heads']}; allowed: a divisor of d_model = {dataset['d_model']}",
        )
    shifted = selected_modules(f"{key}.shifted", dataset, dataset.get("shifted", "all"))
    narrowest = min(shifted, key=lambda m: m.max_rank)
    task_rank = dataset.get("task_rank", 0)
    if not 1 <= task_rank <= narrowest.max_rank:
        raise ConfigError(
            f"{key}.task_rank",
            f"got {task_rank}; allowed: 1..{narrowest.max_rank} = the narrowest shifted module "
            f"({narrowest.shape_text()})",
        )


def selected_modules(key: str, dataset: dict, pattern: str) -> list[LinearModule]:
    """The modules of a deep dataset that ``pattern`` selects; an error if it selects none."""
    allowed = (
        f"{', '.join(TARGET_PRESETS)}, or a regular expression matching a module of dataset "
        f"{dataset['name']!r} ({describe_names(dataset['kind'])})"
    )
    try:
        modules = select(linear_modules(dataset), pattern)
    except re.error as err:
        raise ConfigError(
            key, f"got {pattern!r}, not a regular expression ({err}); allowed: {allowed}"
        ) from None
    if not modules:
        raise ConfigError(key, f"got {pattern!r}, which matches no module; allowed: {allowed}")
    return modules


def check_block(key: str, block: dict, main: dict, datasets: list[dict]) -> None:
    """A grid block's ranks fit every module they adapt, its targets select modules of each
    deep dataset (and it has one), and a ``rank_budget`` divides evenly."""
    deep = [d for d in datasets if d["kind"] in DEEP_KINDS]
    if "targets" in block and not deep:
        raise ConfigError(
            f"{key}.targets",
            f"got {block['targets']!r}; allowed only where the block has an mlp or transformer "
            f"dataset, and {', '.join(repr(d['name']) for d in datasets)} have one layer",
        )
    targets_key = f"{key}.targets" if "targets" in block else "grid.targets"
    patterns = block.get("targets", main.get("targets", ["all"]))
    limits = [
        (min(d["in_features"], d["out_features"]), d["name"],
         f"min(in_features, out_features) of dataset {d['name']!r}")
        for d in datasets if d["kind"] not in DEEP_KINDS
    ]  # fmt: skip
    for dataset in deep:
        for index, pattern in enumerate(patterns):
            modules = selected_modules(f"{targets_key}[{index}]", dataset, pattern)
            narrowest = min(modules, key=lambda m: m.max_rank)
            text = (f"the narrowest module that targets {pattern!r} adapt on dataset "
                    f"{dataset['name']!r} ({narrowest.shape_text()})")  # fmt: skip
            limits.append((narrowest.max_rank, dataset["name"], text))
    if "rank_budget" in block:
        check_budget(key, block, deep, datasets, patterns)
        return
    smallest, _, where = min(limits)
    for index, rank in enumerate(block.get("rank", main["rank"])):
        if rank > smallest:
            raise ConfigError(
                f"{key}.rank[{index}]", f"got {rank}; allowed: 1..{smallest} = {where}"
            )


def check_budget(
    key: str, block: dict, deep: list[dict], datasets: list[dict], patterns: list[str]
) -> None:
    """A fixed-budget block: no ``rank`` beside it, deep datasets only, and each target set's
    rank, rank_budget / (number of matrix types it adapts), a whole number that fits."""
    budget = block["rank_budget"]
    if "rank" in block:
        raise ConfigError(f"{key}.rank_budget", "give rank_budget or rank in a block, not both")
    for dataset in datasets:
        if dataset not in deep:
            raise ConfigError(
                f"{key}.rank_budget",
                f"applies to mlp and transformer datasets only, not {dataset['name']!r} "
                f"(kind {dataset['kind']}); name the block's datasets",
            )
    for dataset in deep:
        for pattern in patterns:
            modules = select(linear_modules(dataset), pattern)
            types = len(matrix_types(modules))
            if budget % types:
                raise ConfigError(
                    f"{key}.rank_budget",
                    f"got {budget}; allowed: a multiple of {types}, the number of matrix types "
                    f"that targets {pattern!r} adapt on dataset {dataset['name']!r}",
                )
            narrowest = min(modules, key=lambda m: m.max_rank)
            if budget // types > narrowest.max_rank:
                raise ConfigError(
                    f"{key}.rank_budget",
                    f"got {budget}, which gives targets {pattern!r} rank {budget // types}; "
                    f"allowed: at most {narrowest.max_rank} = {narrowest.shape_text()} of "
                    f"dataset {dataset['name']!r}",
                )
