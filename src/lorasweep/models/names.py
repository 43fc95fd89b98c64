"""The linear modules of the deep models, by their fixed names, and which of them a preset or a
regular expression selects (for ``shifted`` and ``targets``).

Torch-free, so that the config check and the planner can use it before any job runs. The
modules and their shapes come from the one description of each architecture,
:mod:`lorasweep.models.architecture`.

A pattern selects modules the way PEFT's ``target_modules`` does: the presets ``attention``
(q, k, v, o), ``mlp`` (up, down; every layer of the ``mlp`` kind) and ``all``, or else a regular
expression that must match a whole dotted suffix of the name, so ``q|v`` selects every
``blocks.<i>.attn.q`` and ``blocks.<i>.attn.v``, and ``blocks\\.0\\..*`` the first block.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from lorasweep.models.architecture import (
    ATTENTION_TYPES,
    FEEDFORWARD_TYPES,
    LinearModule,
    linear_modules,
    matrix_type,
)
from lorasweep.options import TARGET_PRESETS

__all__ = ["ATTENTION_TYPES", "FEEDFORWARD_TYPES", "LinearModule", "linear_modules", "matrix_type"]


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
