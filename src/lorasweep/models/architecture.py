"""Every parameter of each dataset kind's base model, by name and shape, from its config entry
alone: the one description of the architectures that planning, costs and memory read.

Torch-free, so that the config check and the planner can use it before any job runs. The models
built by :mod:`lorasweep.training.loop` and :mod:`lorasweep.models.networks` have exactly these
``named_parameters()`` (tested for a range of configs):

- ``lowrank``, ``noise``: one ``nn.Linear``, ``weight`` (d_out×d_in) and ``bias`` (d_out);
- ``mlp``: ``layers.<i>.{weight,bias}`` from ``in_features`` through ``d_model``-wide hidden
  layers to ``out_features``, then the pre-norms ``norms.<i>.{weight,bias}`` of layers 1…n−1;
- ``transformer``: per block ``blocks.<i>.ln1``, ``attn.{q,k,v,o}`` (d_model → d_model),
  ``ln2``, ``mlp.up`` (d_model → d_ff) and ``mlp.down`` (d_ff → d_model), in that order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

ATTENTION_TYPES = ("q", "k", "v", "o")
FEEDFORWARD_TYPES = ("up", "down")
DEEP_KINDS = ("mlp", "transformer")


def matrix_type(name: str) -> str:
    """What a fixed budget counts as one matrix type: q, k, v, o, up or down in the transformer
    (the same matrix in every block), and each layer of the MLP on its own."""
    return name.rsplit(".", 1)[-1] if name.startswith("blocks.") else name


@dataclass(frozen=True)
class LinearModule:
    """One ``nn.Linear`` of a model: its qualified name (empty for a single layer), shape and
    preset group."""

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

    @property
    def weights(self) -> int:
        return self.in_features * self.out_features

    def shape_text(self) -> str:
        return f"{self.name}: {self.in_features}→{self.out_features}"


@dataclass(frozen=True)
class Architecture:
    """A dataset's base model: its parameters in ``named_parameters()`` order, its linear
    modules in forward order, and the per-sample sizes the cost and memory models read."""

    kind: str
    parameters: tuple[tuple[str, tuple[int, ...]], ...]
    linears: tuple[LinearModule, ...]
    tokens: int
    """Positions per sample: ``seq_len`` for the transformer, else 1."""
    inputs: int
    """Values of one sample's input."""
    outputs: int
    """Values of one sample's output."""
    heads: int = 1

    @property
    def deep(self) -> bool:
        return self.kind in DEEP_KINDS

    @property
    def n_layers(self) -> int:
        """Blocks of the transformer, linear layers of the MLP, 1 for a single layer."""
        if self.kind == "transformer":
            return len(self.linears) // (len(ATTENTION_TYPES) + len(FEEDFORWARD_TYPES))
        return len(self.linears)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.parameters)

    def parameter_count(self) -> int:
        return sum(math.prod(shape) for _, shape in self.parameters)

    def linear_weights(self) -> int:
        """Entries of every linear module's weight matrix."""
        return sum(m.weights for m in self.linears)

    def forward_multiply_adds(self) -> float:
        """Multiply-adds of one sample's forward pass: every linear module on each token, plus
        the transformer's attention scores QKᵀ and mixing (weights·V), 2·tokens²·d_model per
        block."""
        linear = self.tokens * self.linear_weights()
        if self.kind != "transformer":
            return linear
        width = self.linears[0].out_features
        return linear + self.n_layers * 2 * self.tokens * self.tokens * width

    def activations(self) -> float:
        """Values per sample that autograd keeps for the backward pass: each linear module's
        input and output on each token, each norm's input, GELU's input, and the transformer's
        attention scores and weights (2·tokens² per head and block)."""
        kept = self.tokens * sum(m.in_features + m.out_features for m in self.linears)
        norms = [shape for name, shape in self.parameters if _is_norm(name) and "weight" in name]
        kept += self.tokens * sum(shape[0] for shape in norms)
        kept += self.tokens * sum(m.out_features for m in self.linears if m.name.endswith("up"))
        if self.kind == "transformer":
            kept += 2 * self.n_layers * self.heads * self.tokens * self.tokens
        elif self.kind == "mlp":
            kept += self.tokens * sum(m.in_features for m in self.linears[1:])
        return kept


def _is_norm(name: str) -> bool:
    return name.startswith("norms.") or ".ln" in name


def _linear(name: str, d_in: int, d_out: int, group: str) -> list[tuple[str, tuple[int, ...]]]:
    prefix = f"{name}." if name else ""
    return [(f"{prefix}weight", (d_out, d_in)), (f"{prefix}bias", (d_out,))]


def _norm(name: str, width: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{name}.weight", (width,)), (f"{name}.bias", (width,))]


def describe(dataset: Mapping) -> Architecture:
    """The base model of a dataset (a config entry or :meth:`DatasetSpec.as_dict`)."""
    kind = dataset["kind"]
    if kind == "transformer":
        d, d_ff, n_layers = dataset["d_model"], dataset["d_ff"], dataset["n_layers"]
        params, linears = [], []
        for i in range(n_layers):
            block = f"blocks.{i}"
            params += _norm(f"{block}.ln1", d)
            for t in ATTENTION_TYPES:
                linears.append(LinearModule(f"{block}.attn.{t}", d, d, "attention"))
                params += _linear(f"{block}.attn.{t}", d, d, "attention")
            params += _norm(f"{block}.ln2", d)
            linears.append(LinearModule(f"{block}.mlp.up", d, d_ff, "mlp"))
            params += _linear(f"{block}.mlp.up", d, d_ff, "mlp")
            linears.append(LinearModule(f"{block}.mlp.down", d_ff, d, "mlp"))
            params += _linear(f"{block}.mlp.down", d_ff, d, "mlp")
        tokens, heads = dataset.get("seq_len") or 1, dataset.get("n_heads") or 1
        return Architecture(kind, tuple(params), tuple(linears), tokens, tokens * d, tokens * d,
                            heads)  # fmt: skip
    d_in, d_out = dataset["in_features"], dataset["out_features"]
    if kind == "mlp":
        n_layers, width = dataset["n_layers"], dataset["d_model"]
        widths = [d_in, *[width] * (n_layers - 1), d_out]
        linears = [LinearModule(f"layers.{i}", widths[i], widths[i + 1], "mlp")
                   for i in range(n_layers)]  # fmt: skip
        params = [p for m in linears for p in _linear(m.name, m.in_features, m.out_features, "")]
        for i in range(1, n_layers):
            params += _norm(f"norms.{i}", width)
        return Architecture(kind, tuple(params), tuple(linears), 1, d_in, d_out)
    layer = LinearModule("", d_in, d_out, "mlp")
    return Architecture(kind, tuple(_linear("", d_in, d_out, "")), (layer,), 1, d_in, d_out)


def linear_modules(dataset: Mapping) -> list[LinearModule]:
    """The linear modules of a deep dataset's network, in forward order; empty for the
    single-layer kinds (whose one layer :func:`describe` lists under the empty name)."""
    return list(describe(dataset).linears) if dataset["kind"] in DEEP_KINDS else []
