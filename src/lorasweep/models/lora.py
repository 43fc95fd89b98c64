"""Low-rank adaptation of a frozen ``nn.Linear`` (Hu et al. 2021, arXiv 2106.09685).

Layout follows the paper and PEFT: ``A`` is r×d_in, ``B`` is d_out×r, and the layer computes
``h = W₀x + b + s·B(Ax)``. The product ``BA`` is only formed by :meth:`LoRALinear.merge`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from lorasweep.models.registry import INIT_RECORDS, LORA
from lorasweep.models.scaling import scaling_factor
from lorasweep.options import BIASES, INITS

RESIDUAL_BASE_INITS = tuple(i.name for i in INIT_RECORDS if i.replaces_base)
"""Inits that move s·B₀A₀ out of W₀ and freeze the residual W₀ − s·B₀A₀ instead (see
:meth:`LoRALinear.reset_adapter`). Every other init keeps W₀ frozen as it is."""


def check_adapter_arguments(base: nn.Linear, rank: int, init: str, bias: str, dropout: float):
    """Refuse, with the allowed values, arguments that no adapter layer can take."""
    d_out, d_in = base.weight.shape
    if not 1 <= rank <= min(d_in, d_out):
        raise ValueError(f"rank must be in 1..{min(d_in, d_out)} for a {d_in}→{d_out} layer")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    if bias not in BIASES:
        raise ValueError(f"unknown bias policy {bias!r}; allowed: {', '.join(BIASES)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def dropout_keep(shape: Sequence[int], generator: torch.Generator | None, p: float) -> torch.Tensor:
    """A dropout keep-mask of ``shape`` (True where kept, with probability 1 − p), drawn on the
    CPU from a module's own ``generator``: the one draw every engine makes for a step."""
    return torch.rand(tuple(shape), generator=generator, device="cpu") >= p


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable rank-r update ``s·BA``.

    The base layer's weight is always frozen. Its bias trains only with ``bias="lora_only"``. The
    weight may be a meta tensor (``device`` then says where the adapter lives) when the caller
    trains against cached base outputs and never runs the base layer itself.
    Merging is explicit: :meth:`merge` folds ``s·BA`` into the base weight and :meth:`unmerge`
    takes it out again; ``train()``/``eval()`` never merge behind the caller's back.
    """

    method_record = LORA
    """The method this module computes; :func:`lorasweep.training.exact.can_cache_base` asks
    it whether caching W₀x is exact."""

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
        """Initialise A and B by ``self.init``.

        - ``kaiming``: A ~ U(±1/√d_in) (kaiming_uniform with a=√5, as loralib and PEFT), B = 0.
        - ``gaussian``: A ~ N(0, (1/r)²) (PEFT's ``init_lora_weights="gaussian"``), B = 0.
        - ``pissa``: W₀ = USVᵀ; A = S_r^½V_rᵀ/√s, B = U_rS_r^½/√s, and the frozen weight becomes
          W₀ − s·BA, so the layer's output is unchanged (Meng et al. 2024, arXiv 2404.02948).
        - ``randn``: A, B ~ N(0, 1), the seed demo's choice; the adapter is not a no-op at step 0.
        """
        INITIALISERS[self.init](self, generator)

    def _replace_base_weight(self, weight: torch.Tensor) -> None:
        """Give the base layer a new frozen weight rather than writing into the old one, which
        may be shared (training wraps the dataset's W₀ without copying it)."""
        self.base.weight = nn.Parameter(weight, requires_grad=False)

    def delta_weight(self) -> torch.Tensor:
        """The update s·BA, shaped like the base weight (d_out×d_in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def adapter_input(self, x: torch.Tensor) -> torch.Tensor:
        """x after inverted dropout (training only), drawn from ``dropout_generator``."""
        if not self.training or self.dropout == 0:
            return x
        keep = dropout_keep(x.shape, self.dropout_generator, self.dropout)
        return x * keep.to(x.device, x.dtype) / (1.0 - self.dropout)

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        """s·B(A·dropout(x)), computed as (x Aᵀ) Bᵀ so that BA is never formed."""
        return self.scaling * ((self.adapter_input(x) @ self.lora_A.T) @ self.lora_B.T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + self.adapter_output(x)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold s·BA into the base weight: W = W₀ + s·BA. Forward then skips the adapter."""
        if self.merged:
            raise RuntimeError("adapter is already merged")
        self._replace_base_weight(self.base.weight + self.delta_weight())
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge`: W₀ = W − s·BA."""
        if not self.merged:
            raise RuntimeError("adapter is not merged")
        self._replace_base_weight(self.base.weight - self.delta_weight())
        self.merged = False

    def extra_repr(self) -> str:
        return (
            f"rank={self.rank}, alpha={self.alpha}, scaling={self.scaling_rule} "
            f"(s={self.scaling:.4g}), init={self.init}, dropout={self.dropout}, "
            f"merged={self.merged}"
        )


def _drawn(param: torch.Tensor, init, generator: torch.Generator | None, **kwargs) -> None:
    """Fill ``param`` by ``init`` on the generator's device (the CPU) and copy the draw over,
    so that a seeded run starts from the same adapter on CPU and CUDA."""
    where = generator.device if generator is not None else param.device
    value = torch.empty(param.shape, dtype=param.dtype, device=where)
    init(value, generator=generator, **kwargs)
    param.copy_(value)


def _kaiming(layer: LoRALinear, generator: torch.Generator | None) -> None:
    _drawn(layer.lora_A, nn.init.kaiming_uniform_, generator, a=math.sqrt(5))
    nn.init.zeros_(layer.lora_B)


def _gaussian(layer: LoRALinear, generator: torch.Generator | None) -> None:
    _drawn(layer.lora_A, nn.init.normal_, generator, std=1.0 / layer.rank)
    nn.init.zeros_(layer.lora_B)


def _randn(layer: LoRALinear, generator: torch.Generator | None) -> None:
    _drawn(layer.lora_A, nn.init.normal_, generator)
    _drawn(layer.lora_B, nn.init.normal_, generator)


def _pissa(layer: LoRALinear, generator: torch.Generator | None) -> None:
    weight = layer.base.weight
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = s[: layer.rank].sqrt() / math.sqrt(layer.scaling)
    layer.lora_A.copy_((root[:, None] * vh[: layer.rank]).to(weight.dtype))
    layer.lora_B.copy_((u[:, : layer.rank] * root[None, :]).to(weight.dtype))
    residual = weight.double() - layer.scaling * (layer.lora_B.double() @ layer.lora_A.double())
    layer._replace_base_weight(residual.to(weight.dtype))


INITIALISERS = {"kaiming": _kaiming, "gaussian": _gaussian, "randn": _randn, "pissa": _pissa}
"""Each registered init's code (:data:`lorasweep.models.registry.INIT_RECORDS`), by name;
``tests/test_registry.py`` holds the keys equal to the registry."""


def apply_lora(
    model: nn.Module,
    pattern: str,
    rank: int,
    generator: torch.Generator | None = None,
    **lora_kwargs,
) -> list[str]:
    """Replace every ``nn.Linear`` in ``model`` whose qualified name fully matches ``pattern``
    (a regular expression) by a :class:`LoRALinear` around it, and freeze every other parameter.

    Returns the names of the wrapped layers. Raises ``ValueError`` if nothing matched.
    """
    regex = re.compile(pattern)
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and regex.fullmatch(name)
    ]
    if not targets:
        raise ValueError(f"no nn.Linear in the model matches {pattern!r}")
    for param in model.parameters():
        param.requires_grad_(False)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapped = LoRALinear(getattr(parent, child), rank, generator=generator, **lora_kwargs)
        setattr(parent, child, wrapped)
    return targets


def is_adapter_layer(module: nn.Module) -> bool:
    """Whether ``module`` is an adapter layer of any method (its class names its method
    record: :class:`LoRALinear`, :class:`~lorasweep.models.dora.DoRALinear`)."""
    return getattr(type(module), "method_record", None) is not None


def lora_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Every adapter layer in ``model`` (:func:`is_adapter_layer`) with its qualified name."""
    for name, module in model.named_modules():
        if is_adapter_layer(module):
            yield name, module
