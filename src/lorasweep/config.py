"""Config checks that turn every mistake into one line naming the key and what is allowed.

:func:`parse_strings` first reads text given where the schema wants a number, boolean or null
(``--config`` values arrive as text). The JSON schema (``workflow/schemas/config.schema.yaml``)
is then applied by Snakemake's ``validate``; :func:`describe_schema_error` rewrites its error.
:func:`check_semantics` normalises whole-number floats to int, rejects NaN and infinities, and
adds the rules a schema cannot express (ranks against layer sizes, unique names, safe paths,
which keys each dataset kind takes, and which modules ``shifted`` and ``targets`` select).
:func:`check_resources` refuses what would not fit the ``limits``.
"""

from __future__ import annotations

import difflib
import functools
import math
import operator
import re
import sys
from collections import Counter
from pathlib import Path, PurePosixPath

import yaml

from lorasweep import options
from lorasweep.models import registry
from lorasweep.models.names import (
    LinearModule,
    describe_names,
    linear_modules,
    matrix_types,
    select,
)
from lorasweep.options import BIAS_ALIASES, DEEP_KINDS, TARGET_PRESETS
from lorasweep.planning import resources

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


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
    bounds = [f"{sign} {schema[name]}" for name, sign in _BOUNDS.items() if name in schema]
    return " ".join([text, " and ".join(bounds)]) if bounds else text


_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


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


@functools.cache
def load_schema() -> dict:
    """The config's JSON schema."""
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def _branches(schema: dict, root: dict) -> list[dict]:
    """The alternatives ``schema`` allows (its ``oneOf``, or itself), local ``$ref``s resolved."""
    while "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    if "oneOf" in schema:
        return [branch for option in schema["oneOf"] for branch in _branches(option, root)]
    return [schema]


_TYPES = {
    "integer": lambda v: isinstance(v, int) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, int | float),
    "string": lambda v: isinstance(v, str),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def _has_type(value, kind: str | None) -> bool:
    """Whether ``value`` is of JSON-schema type ``kind``, as jsonschema decides it."""
    if isinstance(value, bool):
        return kind == "boolean"
    return kind in _TYPES and _TYPES[kind](value)


_YAML_NULL = {"null", "Null", "NULL", "~"}
_YAML_BOOL = {
    text: word == "true"
    for word in ("true", "false")
    for text in (word, word.title(), word.upper())
}
_YAML_INT = re.compile(r"[-+]?[0-9]+")
_YAML_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_YAML_SPECIAL = re.compile(r"([-+]?)\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
_NOT_A_SCALAR = object()


def _yaml_scalar(text: str, kind: str | None):
    """``text`` read as a YAML 1.2 (core schema) scalar of JSON-schema type ``kind``."""
    if kind == "null" and text in _YAML_NULL:
        return None
    if kind == "boolean" and text in _YAML_BOOL:
        return _YAML_BOOL[text]
    if kind in ("integer", "number"):
        if _YAML_INT.fullmatch(text):
            return int(text)
        if _YAML_FLOAT.fullmatch(text):
            return float(text)
        if special := _YAML_SPECIAL.fullmatch(text):
            return float(f"{special[1]}inf") if special[2] else math.nan
    return _NOT_A_SCALAR


def _parse(value, schema: dict, root: dict):
    branches = _branches(schema, root)
    if isinstance(value, str):
        if any(b.get("type") == "string" and value in b.get("enum", [value]) for b in branches):
            return value
        parsed = (_yaml_scalar(value, b.get("type")) for b in branches)
        return next((p for p in parsed if p is not _NOT_A_SCALAR), value)
    for branch in branches:
        if branch.get("type") == "object" and isinstance(value, dict):
            properties = branch.get("properties", {})
            for key in [key for key in value if key in properties]:
                value[key] = _parse(value[key], properties[key], root)
            return value
        if branch.get("type") == "array" and isinstance(value, list) and "items" in branch:
            return [_parse(item, branch["items"], root) for item in value]
    return value


def parse_strings(config: dict, schema: dict | None = None) -> dict:
    """Read text as YAML 1.2 would where the schema wants a number, a boolean or null, in place.

    Snakemake passes ``--config`` values through as text (``reuse_runs=false`` gives
    ``'false'``, ``'grid={lr: [1e-3]}'`` gives ``['1e-3']``), and YAML 1.1 files read ``1e-3``
    as text too. Text the schema allows as it is (``memory_gib: auto``) stays text; text that is
    no such scalar is left for the schema to reject.
    """
    root = schema or load_schema()
    return _parse(config, root, root)


def _normalise(value, schema: dict, root: dict, path: list):
    branch = next((b for b in _branches(schema, root) if _has_type(value, b.get("type"))), None)
    if branch is None:
        return value
    kind = branch.get("type")
    if kind == "object":
        properties = branch.get("properties", {})
        for key in [key for key in value if key in properties]:
            value[key] = _normalise(value[key], properties[key], root, [*path, key])
    elif kind == "array" and "items" in branch:
        return [_normalise(v, branch["items"], root, [*path, i]) for i, v in enumerate(value)]
    elif kind == "number" and not _finite(value):
        allowed = _schema_allowed(branch).replace("a number", "a finite number", 1)
        raise ConfigError(key_path(path), f"got {value!r}; allowed: {allowed}")
    elif kind == "integer":
        if value > INT64_MAX:
            allowed = _schema_allowed({**branch, "maximum": INT64_MAX})
            raise ConfigError(key_path(path), f"got {value!r}; allowed: {allowed}")
        return int(value)
    return value


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


INT64_MAX = 2**63 - 1
"""The largest integer the config takes: seeds and sizes end up in int64 tensors and tables."""


def normalise_numbers(config: dict, schema: dict | None = None) -> dict:
    """Turn whole-number floats into ints wherever the schema wants an integer (``2.0`` passes
    the schema as an integer, but would name runs ``_s2.0`` and seed other streams), in place;
    reject integers beyond :data:`INT64_MAX`, and NaN and infinities wherever it wants a
    number."""
    root = schema or load_schema()
    return _normalise(config, root, root, [])


PERIODIC = re.compile(r"(.+)\1{19,}\Z")
"""A text ending in 20 or more repeats, which Snakemake rejects as a wildcard value."""


def _check_results_folder(results: str) -> None:
    posix = PurePosixPath(results)
    if posix.is_absolute() or ".." in posix.parts:
        raise ConfigError("results", f"got {results!r}; allowed: a relative path without '..'")
    path = Path(results)
    for folder in [*reversed(path.parents), path]:
        if folder.exists() and not folder.is_dir():
            raise ConfigError(
                "results",
                f"got {results!r}, but {str(folder)!r} is an existing file; allowed: a folder, "
                "or a path that does not exist yet",
            )


def check_semantics(config: dict) -> None:
    """Checks that span several keys, after :func:`normalise_numbers`. Run after schema
    validation (defaults filled in); the results folder is checked against the file system."""
    normalise_numbers(config)
    _check_results_folder(config.get("results", "results"))

    for index, dataset in enumerate(config["datasets"]):
        name = dataset["name"]
        if PERIODIC.search(name):
            raise ConfigError(
                f"datasets[{index}].name",
                f"got {name!r}; allowed: a name that does not end in 20 or more repeats of the "
                "same text (Snakemake rejects such file names)",
            )

    names = Counter(d["name"] for d in config["datasets"])
    for name, count in names.items():
        if count > 1:
            raise ConfigError(
                "datasets", f"dataset name {name!r} is given {count} times; names must be unique"
            )

    datasets = {}
    for index, dataset in enumerate(config["datasets"]):
        check_dataset(f"datasets[{index}]", dataset)
        if dataset.get("compat", "none") == "tutorial" and dataset["kind"] != "noise":
            raise ConfigError(
                f"datasets[{index}].compat",
                "tutorial needs kind: noise (the tutorial's targets are randn, independent of x)",
            )
        _check_source(index, dataset)
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
        check_methods(key, block, main, [datasets[n] for n in names or datasets], config)
    check_method_settings(config)


def check_method_settings(config: dict) -> None:
    """Each method's ``method_settings`` name only keywords the method takes."""
    for name, settings in config.get("method_settings", {}).items():
        allowed = registry.method(name).settings
        for keyword in settings:
            if keyword not in allowed:
                raise ConfigError(
                    f"method_settings.{name}.{keyword}",
                    f"unknown setting of {name}; allowed: {', '.join(allowed) or 'none'}",
                )


def check_methods(key: str, block: dict, main: dict, datasets: list[dict], config: dict) -> None:
    """A block's methods fit its settings: one trained through PEFT leaves the base bias
    frozen, and its rank obeys the method's rule on every module it adapts (OFT: divides
    in_features; HRA: even; FourierFT: at most d_in·d_out coefficients)."""
    methods = block.get("method", main.get("method", [registry.default_method()]))
    ranks = block.get("rank", main["rank"]) if "rank_budget" not in block else []
    bias = config["train"].get("bias", "none")
    for index, name in enumerate(methods):
        record = registry.method(name)
        if record.through_peft and BIAS_ALIASES.get(bias, bias) != "none":
            engine = [m for m in options.ENGINE_METHODS if registry.is_adapter(m)]
            raise ConfigError(
                f"{key}.method[{index}]",
                f"{name} trains through PEFT, which leaves the base bias frozen; train.bias "
                f"{bias} is allowed with {', '.join(engine)} only",
            )
        for r_index, rank in enumerate(ranks if record.rank_keyword else []):
            if record.even_rank and rank % 2:
                raise ConfigError(
                    f"{key}.rank[{r_index}]", f"got {rank}; allowed for {name}: an even rank"
                )
            for dataset in datasets if record.rank_counts_entries else []:
                smallest = min(_adapted(dataset, block, main), key=lambda m: m.weights)
                if rank > smallest.weights:
                    raise ConfigError(
                        f"{key}.rank[{r_index}]",
                        f"got {rank}; allowed for {name}: 1..{smallest.weights} = d_in·d_out of "
                        f"{smallest.shape_text()} of dataset {dataset['name']!r}",
                    )
            if not record.rank_divides_inputs:
                continue
            for dataset in datasets:
                for module in _adapted(dataset, block, main):
                    if module.in_features % rank:
                        raise ConfigError(
                            f"{key}.rank[{r_index}]",
                            f"got {rank}; allowed for {name}: a divisor of in_features of every "
                            f"adapted module, and {module.shape_text()} of dataset "
                            f"{dataset['name']!r} has {module.in_features}",
                        )


def _adapted(dataset: dict, block: dict, main: dict) -> list[LinearModule]:
    """The modules a block adapts on a dataset: its targets' on a deep one, else its layer."""
    if dataset["kind"] not in DEEP_KINDS:
        return [LinearModule("", dataset["in_features"], dataset["out_features"], "mlp")]
    patterns = block.get("targets", main.get("targets", ["all"]))
    return [m for pattern in patterns for m in select(linear_modules(dataset), pattern)]


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
    methods = block.get("method", main.get("method", [registry.default_method()]))
    if all(registry.method(m).rank_counts_entries for m in methods):
        return
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


def _check_source(index: int, dataset: dict) -> None:
    """A source task needs a lowrank dataset, and room for ΔW*'s input directions beside its
    own: top_directions ≤ in_features − task_rank."""
    source = dataset.get("source")
    if source is None:
        return
    key = f"datasets[{index}].source"
    if dataset["kind"] != "lowrank":
        raise ConfigError(key, f"got a source for kind {dataset['kind']!r}; allowed: lowrank only")
    room = dataset["in_features"] - dataset.get("task_rank", 0)
    if source["top_directions"] > room:
        raise ConfigError(
            f"{key}.top_directions",
            f"got {source['top_directions']}; allowed: 1..{room} = in_features − task_rank",
        )


def _limit(config: dict, key: str):
    default = load_schema()["properties"]["limits"]["properties"][key]["default"]
    return config.get("limits", {}).get(key, default)


def _gib(size: float) -> str:
    return f"{size / resources.GIB:.1f} GiB"


def _memory_limits(config: dict, memory_bytes: int | None, gpu_bytes: int | None):
    """(bytes, where that limit comes from) for a job's memory and for a GPU training job's GPU
    memory; None where it is not checked."""
    setting = _limit(config, "memory_gib")
    if setting is None:
        return None, None
    if setting != "auto":
        return (setting * resources.GIB, "limits.memory_gib"), None
    if memory_bytes is None:
        memory_bytes = resources.machine_memory_bytes()
    if gpu_bytes is None and config["train"].get("device", "auto") != "cpu":
        gpu_bytes = resources.gpu_memory_bytes()
    override = "set limits.memory_gib for another machine"
    return (
        (memory_bytes, f"this machine's memory; {override}") if memory_bytes else None,
        (gpu_bytes, f"this machine's GPU; {override}") if gpu_bytes else None,
    )


def _check_memory(config: dict, estimate, limit: tuple, what: str, indices, kind="memory"):
    """Refuse ``estimate(config)`` bytes of ``what`` beyond ``limit`` (bytes, where it comes
    from), naming the size of the datasets at ``indices`` that drives the estimate most."""
    need = estimate(config)
    if need <= limit[0]:
        return
    if limit[0] < resources.PROCESS_BYTES:
        have = f"got {_limit(config, 'memory_gib')!r}"
        if limit[1] != "limits.memory_gib":
            have += f", and {limit[1].split(';')[0]} is {_gib(limit[0])}"
        raise ConfigError(
            "limits.memory_gib",
            f"{have}, less than the {_gib(resources.PROCESS_BYTES)} any job's process holds "
            f"whatever the config's sizes (Python, torch and its BLAS); allowed: at least "
            f"{_gib(resources.PROCESS_BYTES)}, or null to skip the memory check",
        )
    path = resources.largest_factor(estimate, config, _size_paths(config, indices))
    raise ConfigError(
        key_path(path),
        f"got {_at(config, path)}, with which {what} needs about {_gib(need)} of {kind}; "
        f"allowed: sizes that need at most {_gib(limit[0])} ({limit[1]})",
    )


def check_resources(
    config: dict, memory_bytes: int | None = None, gpu_bytes: int | None = None
) -> None:
    """Refuse a config whose estimated memory or work (:mod:`lorasweep.planning.resources`) is
    beyond ``limits``, naming the key that drives the estimate most. With ``memory_gib: auto`` the
    limit is ``memory_bytes`` (default: this machine's MemTotal) and, unless training runs on
    the CPU, ``gpu_bytes`` (default: the GPU's memory, from ``nvidia-smi``; none without one)."""
    memory, gpu = _memory_limits(config, memory_bytes, gpu_bytes)
    every = range(len(config["datasets"]))
    if memory is not None:
        for index, dataset in enumerate(config["datasets"]):

            def generating(c, index=index):
                return resources.generation_bytes(c["datasets"][index])

            what = f"generating dataset {dataset['name']!r}"
            _check_memory(config, generating, memory, what, [index])
        _check_memory(config, resources.training_bytes, memory, "a training job", every)
    if gpu is not None:
        _check_memory(config, resources.training_bytes, gpu, "a training job", every, "GPU memory")

    most = _limit(config, "multiply_adds")
    if most is not None and (work := resources.multiply_adds(config)) > most:
        paths = [("train", "epochs"), *_size_paths(config, every)]
        path = resources.largest_factor(resources.multiply_adds, config, paths)
        runs = sum(sum(kinds.values()) for kinds in resources.run_counts(config).values())
        steps = resources.optimizer_steps(config)
        raise ConfigError(
            key_path(path),
            f"got {_at(config, path)}, with which the {runs} runs need about {work:.2g} "
            f"multiply-adds ({steps:.3g} optimizer steps; each step of each cohort's wave "
            f"also costs {resources.STEP_COST:.2g} per linear module to dispatch); allowed: at "
            f"most {most:.2g} "
            "(limits.multiply_adds; raise it, or set it to null, to allow more)",
        )


def _at(config: dict, path: tuple):
    return functools.reduce(operator.getitem, path, config)


SIZES = ("n_train", "n_val", "n_test", "in_features", "out_features", *resources.NETWORK_SIZES)


def _size_paths(config: dict, indices) -> list[tuple]:
    """The :data:`SIZES` keys of the datasets at ``indices``, those each of them has."""
    datasets = config["datasets"]
    return [("datasets", i, key) for i in indices for key in SIZES if key in datasets[i]]


def _duplicate_key(node, path: list):
    """(key path, first line, second line) of the first key given twice in a YAML node tree."""
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name in seen:
                return [*path, name], seen[name], key.start_mark.line + 1
            seen[name] = key.start_mark.line + 1
            if found := _duplicate_key(value, [*path, name]):
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            if found := _duplicate_key(item, [*path, index]):
                return found
    return None


def check_duplicate_keys(files) -> None:
    """Refuse a config file that gives a key twice, which YAML loaders (Snakemake's too) accept
    with the last one winning. Files that are not YAML are left to Snakemake's own loader."""
    for file in files:
        try:
            node = yaml.compose(Path(file).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if found := _duplicate_key(node, []):
            path, first, second = found
            raise ConfigError(
                key_path(path),
                f"given twice in {file} (lines {first} and {second}), and only the last would "
                "count; keep one",
            )


def rename_aliases(config: dict) -> list[str]:
    """Read the former names of options (:data:`~lorasweep.options.BIAS_ALIASES`: ``bias: all``
    is PEFT's ``lora_only``) as their new ones, in place; the keys where one was given."""
    renamed = []
    train = config.get("train") or {}
    if train.get("bias") in BIAS_ALIASES:
        train["bias"] = BIAS_ALIASES[train["bias"]]
        renamed.append("train.bias")
    blocks = [("grid", config.get("grid") or {})]
    blocks += [(f"extra_grids[{i}]", b) for i, b in enumerate(config.get("extra_grids") or [])]
    for key, block in blocks:
        values = block.get("bias")
        if isinstance(values, list) and any(v in BIAS_ALIASES for v in values):
            block["bias"] = list(dict.fromkeys(BIAS_ALIASES.get(v, v) for v in values))
            renamed.append(f"{key}.bias")
    return renamed


def alias_notice(renamed: list[str]) -> str:
    """The one line that says which former names a config used."""
    return (f"config notice: {', '.join(renamed)}: 'all' is now called 'lora_only' (PEFT's name: "
            "the bias of each adapted layer trains); read as 'lora_only'")  # fmt: skip


def validated(
    config: dict, check_limits: bool = True, files=(), notify: bool | None = None
) -> dict:
    """The one validation of a config, in place: text read as numbers where meant, the schema
    (defaults filled in, via ``snakemake.utils.validate``), cross-key checks and, with
    ``check_limits``, the resource estimates; first, no key given twice in the config
    ``files`` it was read from. Every mistake is a one-line :class:`ConfigError`. A former
    option name is read as its new one, with one notice on stderr (with ``notify``, by default
    where the limits are checked: once, in Snakemake's main process)."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    check_duplicate_keys(files)

    parse_strings(config)
    try:
        validate(config, str(SCHEMA_PATH))
    except WorkflowError as err:
        cause = err.__context__
        if not hasattr(cause, "absolute_path"):
            raise
        raise describe_schema_error(cause) from None
    renamed = rename_aliases(config)
    if renamed and (check_limits if notify is None else notify):
        print(alias_notice(renamed), file=sys.stderr)
    check_semantics(config)
    if check_limits:
        check_resources(config)
    return config
