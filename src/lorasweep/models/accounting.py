"""What a fine-tuning method costs: parameters, training-state bytes, saved-adapter size."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from lorasweep.models.lora import lora_layers


@dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts as PEFT reports them: ``total`` includes the adapter's parameters."""

    trainable: int
    frozen: int
    adapter: int

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def count_parameters(model: nn.Module) -> ParameterCounts:
    """Count trainable, frozen and adapter parameters of ``model``: an adapter layer's
    ``lora_A``, ``lora_B`` and, for DoRA, its magnitude m (PEFT's ``lora_magnitude_vector``)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    adapter = sum(
        layer.lora_A.numel()
        + layer.lora_B.numel()
        + (layer.magnitude.numel() if layer.method_record.magnitude else 0)
        for _, layer in lora_layers(model)
    )
    return ParameterCounts(trainable=trainable, frozen=frozen, adapter=adapter)


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def training_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes held for training: trainable parameters, their gradients, and optimizer state.

    Measured from the live tensors. Without an optimizer, or before its first step, Adam's two
    moment buffers are counted as they will be allocated (2 × parameter bytes).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    param_bytes = sum(tensor_bytes(p) for p in params)
    if optimizer is not None and optimizer.state:
        state_bytes = sum(
            tensor_bytes(value)
            for state in optimizer.state.values()
            for value in state.values()
            if isinstance(value, torch.Tensor)
        )
    else:
        state_bytes = 2 * param_bytes
    return 2 * param_bytes + state_bytes
