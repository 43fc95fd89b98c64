"""Which torch device a run trains on."""

from __future__ import annotations

import torch

from lorasweep.logs import OneLineError
from lorasweep.options import DEVICES


class DeviceUnavailableError(OneLineError, RuntimeError):
    """The config asks for a device this machine does not have."""


def resolve_device(requested: str) -> torch.device:
    """``cpu``, ``cuda`` (an error if CUDA is missing) or ``auto`` (CUDA if present, else CPU)."""
    if requested not in DEVICES:
        raise ValueError(
            f"train.device: unknown device {requested!r}; allowed: {', '.join(DEVICES)}"
        )
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "train.device is 'cuda' but CUDA is not available on this machine "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False); "
            "set train.device to 'auto' or 'cpu'"
        )
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"
