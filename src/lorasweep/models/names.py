"""The linear modules of the deep models, by their fixed names, and which of them a preset or a
regular expression selects (for ``shifted`` and ``targets``).

Torch-free, so that the config check and the planner can use it before any job runs; the
networks of :mod:`lorasweep.models.networks` are built with exactly these names:

- ``transformer``: ``blocks.<i>.attn.{q,k,v,o}`` (d_model → d_model) and
  ``blocks.<i>.mlp.up`` (d_model → d_ff), ``blocks.<i>.mlp.down`` (d_ff → d_model);
- ``mlp``: ``layers.<i>``, from ``in_features`` through ``d_model``-wide hidden layers to
  ``out_features``.

A pattern selects modules the way PEFT's ``target_modules`` does: the presets ``attention``
(q, k, v, o), ``mlp`` (up, down; every layer of the ``mlp`` kind) and ``all``, or else a regular
expression that must match a whole dotted suffix of the name, so ``q|v`` selects every
``blocks.<i>.attn.q`` and ``blocks.<i>.attn.v``, and ``blocks\\.0\\..*`` the first block.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lorasweep.options import TARGET_PRESETS

ATTENTION_TYPES = ("q", "k", "v", "o")
FEEDFORWARD_TYPES = ("up", "down")


@dataclass(frozen=True)
class LinearModule:
    """One ``nn.Linear`` of a deep model: its qualified name, shape and preset group."""

    name: str
    in_features: int
    out_features: int
    group: str
    """``attention`` or ``mlp``."""

    @property
    def matrix_type(self) -> str:
        return matrix_type(self.name)

    @property
    def max_rank(self) -> int:
        return min(self.in_features, self.out_features)

    def shape_text(self) -> str:
        return f"{self.name}: {self.in_features}→{self.out_features}"


def matrix_type(name: str) -> str:
    """What a fixed budget counts as one matrix type: q, k, v, o, up or down in the transformer
    (the same matrix in every block), and each layer of the MLP on its own."""
    return name.rsplit(".", 1)[-1] if name.startswith("blocks.") else name


def linear_modules(dataset: Mapping) -> list[LinearModule]:
    """The linear modules of a dataset's network, in forward order (empty for the single-layer
    kinds). ``dataset`` is a config entry or :meth:`DatasetSpec.as_dict`."""
    kind, n_layers = dataset["kind"], dataset.get("n_layers")
    if kind == "transformer":
        d, d_ff, att = dataset["d_model"], dataset["d_ff"], "attention"
        modules = []
        for i in range(n_layers):
            block = f"blocks.{i}"
            modules += [LinearModule(f"{block}.attn.{t}", d, d, att) for t in ATTENTION_TYPES]
            modules.append(LinearModule(f"{block}.mlp.up", d, d_ff, "mlp"))
            modules.append(LinearModule(f"{block}.mlp.down", d_ff, d, "mlp"))
        return modules
    if kind == "mlp":
        widths = [dataset["in_features"], *[dataset["d_model"]] * (n_layers - 1)]
        widths.append(dataset["out_features"])
        return [
            LinearModule(f"layers.{i}", widths[i], widths[i + 1], "mlp") for i in range(n_layers)
        ]
    return []


def _suffixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def select(modules: Iterable[LinearModule], pattern: str) -> list[LinearModule]:
    """The modules that ``pattern`` selects, in forward order. Raises ``re.error`` for a
    pattern that is neither a preset nor a valid regular expression."""
    modules = list(modules)
    if pattern == "all":
        return modules
    if pattern in TARGET_PRESETS:
        return [m for m in modules if m.group == pattern]
    regex = re.compile(pattern)
    return [m for m in modules if any(regex.fullmatch(s) for s in _suffixes(m.name))]


def matrix_types(modules: Iterable[LinearModule | str]) -> list[str]:
    """The distinct matrix types among ``modules`` (or names), in forward order."""
    names = [m if isinstance(m, str) else m.name for m in modules]
    return list(dict.fromkeys(matrix_type(name) for name in names))


def pattern_label(pattern: str) -> str:
    """``pattern`` as it appears in run ids: a preset or a plain word as is, ``q|v`` as ``q+v``,
    anything else as its letters and digits plus a short hash (``blocks-0-3f9a1c``)."""
    if re.fullmatch(r"[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*", pattern):
        return pattern.replace("|", "+")
    readable = re.sub(r"[^A-Za-z0-9_]+", "-", pattern).strip("-")
    digest = hashlib.sha256(pattern.encode()).hexdigest()[:6]
    return f"{readable}-{digest}" if readable else digest


def describe_names(kind: str) -> str:
    """The naming scheme of ``kind``'s modules, for error messages."""
    if kind == "transformer":
        return "blocks.<i>.attn.{q,k,v,o}, blocks.<i>.mlp.{up,down}"
    return "layers.<i>"
