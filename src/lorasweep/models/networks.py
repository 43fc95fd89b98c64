"""The deep models: a residual MLP and a small pre-LN transformer, with the fixed module names of
:mod:`lorasweep.models.names`, so that LoRA can target each linear module by name.

- ``mlp``: ``h = layers.0(x)``; for each hidden layer i, ``h = h + layers.i(gelu(norms.i(h)))``;
  the output is ``layers.<n-1>(gelu(norms.<n-1>(h)))`` (one linear layer when ``n_layers`` = 1).
- ``transformer``: ``n_layers`` blocks ``h = h + attn(ln1(h))``, ``h = h + mlp(ln2(h))`` on
  ``seq_len`` tokens of width ``d_model``, with causal multi-head self-attention (token t sees
  tokens ≤ t, as in GPT) and an MLP ``down(gelu(up(x)))``; no embedding and no final norm, so
  the network maps ``d_model``-wide tokens to ``d_model``-wide tokens.

Attention is written out (scores, mask, softmax) rather than calling a fused kernel, so that it
is the same computation on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from lorasweep.models.lora import LoRALinear


class DeepNetwork(nn.Module):
    """Base class of the deep models (what LoRA wraps module by module)."""


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, **factory) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model = {d_model} is not divisible by n_heads = {n_heads}")
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model, **factory)
        self.k = nn.Linear(d_model, d_model, **factory)
        self.v = nn.Linear(d_model, d_model, **factory)
        self.o = nn.Linear(d_model, d_model, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """softmax(QKᵀ/√d_head + causal mask)·V per head, then the output projection."""
        rows, tokens, width = x.shape
        head = width // self.n_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(rows, tokens, self.n_heads, head).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(head)
        future = torch.ones(tokens, tokens, dtype=torch.bool, device=x.device).triu(1)
        weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        return self.o((weights @ v).transpose(1, 2).reshape(rows, tokens, width))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, **factory) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, **factory)
        self.down = nn.Linear(d_ff, d_model, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(nn.functional.gelu(self.up(x)))


class Block(nn.Module):
    """A pre-LN transformer block: h + attn(ln1(h)), then h + mlp(ln2(h))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, **factory) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, **factory)
        self.attn = CausalSelfAttention(d_model, n_heads, **factory)
        self.ln2 = nn.LayerNorm(d_model, **factory)
        self.mlp = FeedForward(d_model, d_ff, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(DeepNetwork):
    def __init__(self, d_model: int, n_heads: int, n_layers: int, d_ff: int, **factory) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, d_ff, **factory) for _ in range(n_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class ResidualMLP(DeepNetwork):
    def __init__(
        self, in_features: int, out_features: int, d_model: int, n_layers: int, **factory
    ) -> None:
        super().__init__()
        widths = [in_features, *[d_model] * (n_layers - 1), out_features]
        self.layers = nn.ModuleList(
            nn.Linear(widths[i], widths[i + 1], **factory) for i in range(n_layers)
        )
        self.norms = nn.ModuleDict(
            {str(i): nn.LayerNorm(d_model, **factory) for i in range(1, n_layers)}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers[0](x)
        last = len(self.layers) - 1
        for i in range(1, last + 1):
            update = self.layers[i](nn.functional.gelu(self.norms[str(i)](h)))
            h = h + update if i < last else update
        return h


def build_network(spec, device: torch.device | str = "cpu", dtype=torch.float32) -> DeepNetwork:
    """The architecture of a deep dataset (a :class:`DatasetSpec`), with default-initialised
    weights (use ``device="meta"`` to allocate nothing until the weights are assigned)."""
    factory = {"device": device, "dtype": dtype}
    if spec.kind == "transformer":
        return Transformer(spec.d_model, spec.n_heads, spec.n_layers, spec.d_ff, **factory)
    if spec.kind == "mlp":
        return ResidualMLP(
            spec.in_features, spec.out_features, spec.d_model, spec.n_layers, **factory
        )
    raise ValueError(f"{spec.kind!r} is not a deep kind")


def load_base(dataset, device: torch.device) -> DeepNetwork:
    """The dataset's base network f₀, every parameter a trainable copy of the stored weights."""
    network = build_network(dataset.spec, device="meta")
    state = {key: dataset[key].to(device, copy=True) for key in network.state_dict(keep_vars=True)}
    network.load_state_dict(state, assign=True)
    for param in network.parameters():
        param.requires_grad_(True)
    return network


def linear_names(network: nn.Module) -> list[str]:
    """The qualified names of the network's ``nn.Linear`` modules, in forward order."""
    return [name for name, module in network.named_modules() if isinstance(module, nn.Linear)]


def add_lora(
    network: nn.Module, names: Iterable[str], wrap: Callable[[str, nn.Linear], LoRALinear]
) -> None:
    """Freeze every parameter of ``network``, then replace each named ``nn.Linear`` by
    ``wrap(name, linear)`` (which decides what of it trains)."""
    for param in network.parameters():
        param.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = network.get_submodule(parent_name)
        setattr(parent, child, wrap(name, getattr(parent, child)))
