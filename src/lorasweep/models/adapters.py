"""Each registered adapter method's layer class, and its change of the layer's weight.

The registry (:mod:`lorasweep.models.registry`) says what a method is; this module holds the
torch code for it: the class that wraps a frozen ``nn.Linear``, and ΔW = W_final − W₀ from a
run's stored tensors (for geometry and the population risk).
"""

from __future__ import annotations

import torch

from lorasweep.analysis.geometry import lora_update
from lorasweep.models import registry
from lorasweep.models.dora import DoRALinear, merged_update
from lorasweep.models.lora import LoRALinear

LAYERS = {cls.method_record.name: cls for cls in (LoRALinear, DoRALinear)}
"""Method name → its layer class; ``tests/test_registry.py`` holds the keys equal to the
registry's adapter methods."""


DELTA_WEIGHT = "delta_weight"
"""Where a PEFT-trained run stores its merged change W_final − W₀ of each module it adapted."""


def layer_class(method: str) -> type:
    """The layer class of adapter method ``method``."""
    registry.method(method)
    return LAYERS[method]


def stored_update(
    method: str,
    w0: torch.Tensor,
    tensors: dict[str, torch.Tensor],
    prefix: str,
    scaling: float,
    init_a: torch.Tensor | None = None,
    init_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """W_final − W₀ (float64) of the adapter stored under ``prefix`` in ``tensors``:
    s·(BA − B₀A₀) for LoRA (:func:`~lorasweep.analysis.geometry.lora_update`), the merged
    weight's change for DoRA (:func:`~lorasweep.models.dora.merged_update`); ``init_a`` and
    ``init_b`` are A₀, B₀ where the frozen base was W₀ − s·B₀A₀. A method trained through
    PEFT stored its merged change itself, ``delta_weight``."""
    if f"{prefix}{DELTA_WEIGHT}" in tensors:
        return tensors[f"{prefix}{DELTA_WEIGHT}"].double()
    a, b = tensors[f"{prefix}lora_A"], tensors[f"{prefix}lora_B"]
    if registry.method(method).magnitude:
        return merged_update(w0, a, b, tensors[f"{prefix}magnitude"], scaling, init_a, init_b)
    return lora_update(a, b, scaling, init_a, init_b)
