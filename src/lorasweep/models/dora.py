"""Weight-decomposed low-rank adaptation, DoRA (Liu et al. 2024, arXiv 2402.09353), as PEFT
0.21.2 computes it with ``LoraConfig(use_dora=True)`` (``peft/tuners/lora/dora.py``).

The adapted weight is W′ = m ⊙ (W₀ + s·BA) / ‖W₀ + s·BA‖, the norm taken over each output row
(PEFT's ``torch.linalg.norm(weight, dim=1)``) and detached from the gradient (the paper's §4.3;
PEFT's ``weight_norm.detach()``), with the trainable magnitude m (d_out) initialised to those
norms, so that step 0 is the base model. With inverted dropout on the adapter's input x̃, PEFT's
output is W₀x + b + (m/‖·‖ − 1)·W₀x̃ + (m/‖·‖)·s·B(Ax̃); without it, m/‖·‖ ⊙ (W₀x + s·BAx) + b.

:class:`DoRALinear` is a module of its own, not a :class:`~lorasweep.models.lora.LoRALinear`:
its row norm couples W₀ and BA, so no path that caches W₀x or fuses LoRA's gradient applies.
"""

from __future__ import annotations

import torch
from torch import nn

from lorasweep.models.lora import INITIALISERS, check_adapter_arguments, dropout_keep
from lorasweep.models.registry import DORA
from lorasweep.models.scaling import scaling_factor


def row_norms(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling) -> torch.Tensor:
    """‖W + s·BA‖ of each output row, with BA detached, as PEFT's ``get_weight_norm``."""
    return torch.linalg.norm(weight + scaling * (b @ a).detach(), dim=1).to(weight.dtype)


def merged_weight(
    weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, magnitude: torch.Tensor, scaling
) -> torch.Tensor:
    """W′ = m ⊙ (W + s·BA)/‖W + s·BA‖ (rows), PEFT's merged DoRA weight, for frozen W."""
    norms = row_norms(weight, a, b, scaling)
    return (magnitude / norms)[:, None] * (weight + scaling * (b @ a))


def merged_update(
    w0: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    magnitude: torch.Tensor,
    scaling: float,
    a0: torch.Tensor | None = None,
    b0: torch.Tensor | None = None,
) -> torch.Tensor:
    """W′ − W₀ in float64: a DoRA run's change of the layer, from the dataset's W₀; with a
    residual-base init the frozen weight was W₀ − s·B₀A₀."""
    w0, a, b, magnitude = (t.detach().double().cpu() for t in (w0, a, b, magnitude))
    frozen = w0 if a0 is None else w0 - scaling * (b0.double().cpu() @ a0.double().cpu())
    return merged_weight(frozen, a, b, magnitude, scaling) - w0


class DoRALinear(nn.Module):
    """A frozen linear layer with a DoRA update: trainable A (r×d_in), B (d_out×r) and m
    (d_out), as PEFT's ``lora_A``, ``lora_B`` and ``lora_magnitude_vector``.

    Arguments and initialisation of A and B are :class:`~lorasweep.models.lora.LoRALinear`'s;
    m is then set to ‖W₀ + s·BA‖ of the (possibly residual) frozen weight.
    """

    method_record = DORA

    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        alpha: float = 1.0,
        scaling: str = "standard",
        init: str = "kaiming",
        bias: str = "none",
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
        dropout_generator: torch.Generator | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        d_out, d_in = base.weight.shape
        check_adapter_arguments(base, rank, init, bias, dropout)
        if base.weight.is_meta:
            raise ValueError("DoRA needs the frozen weight W₀ for its row norms")
        self.base = base
        self.rank = rank
        self.alpha = alpha
        self.scaling_rule = scaling
        self.scaling = scaling_factor(scaling, alpha, rank)
        self.init = init
        self.merged = False
        self.dropout = dropout
        self.dropout_generator = dropout_generator
        factory = {"dtype": base.weight.dtype, "device": device or base.weight.device}
        self.lora_A = nn.Parameter(torch.empty(rank, d_in, **factory))
        self.lora_B = nn.Parameter(torch.empty(d_out, rank, **factory))
        self.magnitude = nn.Parameter(torch.empty(d_out, **factory))
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(bias == "lora_only")
        self.reset_adapter(generator)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @torch.no_grad()
    def reset_adapter(self, generator: torch.Generator | None = None) -> None:
        """A and B by ``self.init`` (as LoRA's), then m = ‖W₀ + s·BA‖ (:meth:`reset_magnitude`)."""
        INITIALISERS[self.init](self, generator)
        self.reset_magnitude()

    @torch.no_grad()
    def reset_magnitude(self) -> None:
        """m = ‖W₀ + s·BA‖ per output row, PEFT's ``DoraLinearLayer.update_layer``."""
        self.magnitude.copy_(row_norms(self.base.weight, self.lora_A, self.lora_B, self.scaling))

    def _replace_base_weight(self, weight: torch.Tensor) -> None:
        self.base.weight = nn.Parameter(weight, requires_grad=False)

    def delta_weight(self) -> torch.Tensor:
        """W′ − W₀ of the frozen W₀ (the merged weight's change)."""
        weight = self.base.weight
        return (
            merged_weight(weight, self.lora_A, self.lora_B, self.magnitude, self.scaling) - weight
        )

    def adapter_input(self, x: torch.Tensor) -> torch.Tensor:
        """x after inverted dropout (training only), drawn as LoRA's from ``dropout_generator``."""
        if not self.training or self.dropout == 0:
            return x
        keep = dropout_keep(x.shape, self.dropout_generator, self.dropout)
        return x * keep.to(x.device, x.dtype) / (1.0 - self.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        weight = self.base.weight
        dropped = self.adapter_input(x)
        if dropped is x:
            base_out = out if self.base.bias is None else out - self.base.bias
        else:
            base_out = nn.functional.linear(dropped, weight)
        norms = row_norms(weight, self.lora_A, self.lora_B, self.scaling).detach()
        scale = self.magnitude / norms
        lora = (dropped @ self.lora_A.T) @ self.lora_B.T
        return out + (scale - 1) * base_out + scale * lora * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Replace the base weight by W′; forward then skips the adapter."""
        if self.merged:
            raise RuntimeError("adapter is already merged")
        self._unmerged = self.base.weight
        self._replace_base_weight(self.base.weight + self.delta_weight())
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge` (the frozen weight is kept, as PEFT caches the norm, since W₀
        cannot be recovered from W′ alone)."""
        if not self.merged:
            raise RuntimeError("adapter is not merged")
        self._replace_base_weight(self._unmerged)
        del self._unmerged
        self.merged = False

    def extra_repr(self) -> str:
        return (
            f"rank={self.rank}, alpha={self.alpha}, scaling={self.scaling_rule} "
            f"(s={self.scaling:.4g}), init={self.init}, dropout={self.dropout}, "
            f"merged={self.merged}"
        )
