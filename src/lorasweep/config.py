"""Config checks that turn every mistake into one line naming the key and what is allowed.

The JSON schema (``workflow/schemas/config.schema.yaml``) is applied by Snakemake's
``validate``; :func:`describe_schema_error` rewrites its error. :func:`check_semantics` adds the
rules a schema cannot express (ranks against layer sizes, unique names, safe paths).
"""

from __future__ import annotations

import difflib
from collections import Counter
from pathlib import PurePosixPath


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

    limits = {}
    for index, dataset in enumerate(config["datasets"]):
        limit = min(dataset["in_features"], dataset["out_features"])
        key = f"datasets[{index}].task_rank"
        task_rank = dataset.get("task_rank", 0)
        if dataset["kind"] == "lowrank" and not 1 <= task_rank <= limit:
            raise ConfigError(
                key, f"got {task_rank}; allowed: 1..{limit} = min(in_features, out_features)"
            )
        if dataset.get("compat", "none") == "tutorial" and dataset["kind"] != "noise":
            raise ConfigError(
                f"datasets[{index}].compat",
                "tutorial needs kind: noise (the tutorial's targets are randn, independent of x)",
            )
        limits[dataset["name"]] = limit

    blocks = [("grid", config["grid"], None)] + [
        (f"extra_grids[{i}]", block, block.get("datasets"))
        for i, block in enumerate(config.get("extra_grids", []))
    ]
    for key, block, names in blocks:
        for name in names or []:
            if name not in limits:
                raise ConfigError(
                    f"{key}.datasets", f"unknown dataset {name!r}; allowed: {', '.join(limits)}"
                )
        smallest, where = min((limits[n], n) for n in (names or limits))
        for index, rank in enumerate(block.get("rank", [])):
            if rank > smallest:
                raise ConfigError(
                    f"{key}.rank[{index}]",
                    f"got {rank}; allowed: 1..{smallest} = min(in_features, out_features) "
                    f"of dataset {where!r}",
                )
