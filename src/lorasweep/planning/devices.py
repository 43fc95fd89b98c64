"""Whether training jobs should ask the scheduler for a GPU, decided without importing torch."""

from __future__ import annotations

import os
from pathlib import Path


def visible_cuda_devices() -> int:
    """GPUs this process could use, found without importing torch: the NVIDIA driver's list,
    narrowed by CUDA_VISIBLE_DEVICES when it is set."""
    gpus = Path("/proc/driver/nvidia/gpus")
    count = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip() not in ("", "-1")]))
    return count


def requests_gpu(device: str) -> bool:
    """Whether training jobs should request a GPU: ``cuda``, or ``auto`` where one is visible."""
    return device == "cuda" or (device == "auto" and visible_cuda_devices() > 0)


def resolved_type(device: str) -> str:
    """The device type a ``train.device`` setting resolves to on this machine (``cuda`` or
    ``cpu``), as :func:`lorasweep.training.devices.resolve_device` would without torch."""
    return "cuda" if requests_gpu(device) else "cpu"
