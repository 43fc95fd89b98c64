"""LoRA adapters in PEFT's format: each LoRA run's ``peft/`` folder, and the way back.

A run adapts one ``nn.Linear`` (d_in → d_out). As a PEFT base model that layer lives in
:class:`BaseModel`, a plain ``nn.Module`` that holds it as ``layer``, so the adapter has
``target_modules=["layer"]`` and its tensors carry the names PEFT 0.21.2 gives them:

======================================  ============  ==========================================
key                                     shape         holds
======================================  ============  ==========================================
``base_model.model.layer.lora_A.weight``  r × d_in      A
``base_model.model.layer.lora_B.weight``  d_out × r     B
``base_model.model.layer.base_layer.bias``  d_out       the trained base bias (``lora_only``)
``base_model.model.layer.lora_magnitude_vector``  d_out  DoRA's magnitude m (DoRA runs only)
======================================  ============  ==========================================

A DoRA run's ``adapter_config.json`` has ``use_dora: true`` (the method record's
``peft_use_dora``); PEFT 0.21.2 saves m under the key above.

PEFT 0.21.2 wraps the targeted layer, so with ``bias="all"`` it saves (and loads only) the bias
under ``….layer.base_layer.bias``; the older ``….layer.bias`` is ignored by
``PeftModel.from_pretrained`` without a warning. :func:`read_adapter` accepts both.

**Scale.** PEFT computes s = ``lora_alpha``/r, or ``lora_alpha``/√r with ``use_rslora``.
``standard`` and ``rslora`` map one to one. ``constant`` (s = α whatever r) has no PEFT rule, so
it is written as ``lora_alpha`` = s·r with ``use_rslora: false``, which gives the same s.

**Initialisation.** ``init_lora_weights`` only tells PEFT how to initialise a new adapter; the
saved weights replace that initialisation on loading. ``kaiming`` is PEFT's default (``true``:
the same kaiming-uniform A and zero B), ``gaussian`` is PEFT's ``"gaussian"``. ``randn`` (A and
B both N(0, 1)) has no PEFT counterpart and is written as ``true``: the trained weights are what
a loaded adapter computes with. ``pissa`` trains against the residual base W₀ − s·B₀A₀, which
the folder carries in ``base_layer.safetensors`` (one tensor, ``layer.weight``, in the base
module's own names), and is written as ``true``, as PEFT's PiSSA example does when it saves the
residual model: PEFT must not run PiSSA's SVD again on loading. :func:`base_module` puts the
residual in place.

The folder is written directly (``safetensors`` and :func:`lorasweep.io.write_json`), so writing
it needs no PEFT; the tests load it with PEFT 0.21.2 and compare outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from lorasweep.io import read_json, write_bytes, write_json
from lorasweep.models import registry
from lorasweep.models.adapters import layer_class

TARGET = "layer"
"""The name of the adapted ``nn.Linear`` inside :class:`BaseModel`."""
PREFIX = f"base_model.model.{TARGET}."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
BASE_FILE = "base_layer.safetensors"
"""PiSSA runs only: the residual base weight the adapter was trained against."""
PEFT_VERSION = "0.21.2"
"""The PEFT release whose file format the folder follows (and the tests load it with)."""
MAGNITUDE_KEY = f"{PREFIX}lora_magnitude_vector"
"""Where PEFT 0.21.2 saves (and loads) DoRA's magnitude m."""
BIAS_KEYS = (f"{PREFIX}base_layer.bias", f"{PREFIX}bias")
"""Where a trained base bias is stored: PEFT ≥ 0.7 (written), and older releases (read too)."""


class BaseModel(nn.Module):
    """A run's base as PEFT sees it: one ``nn.Linear`` named ``layer``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.layer = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def peft_scaling(scaling: str, alpha: float, rank: int) -> tuple[float, bool]:
    """(``lora_alpha``, ``use_rslora``) that make PEFT compute the same s as ``scaling``."""
    rule = registry.scaling(scaling)
    return rule.peft_alpha(alpha, rank), rule.peft_use_rslora


def adapter_config(
    rank: int,
    alpha: float,
    scaling: str,
    init: str,
    bias: str,
    dropout: float = 0.0,
    method: str | None = None,
) -> dict:
    """The ``adapter_config.json`` of an adapter run (``method``, by default LoRA), as PEFT's
    ``LoraConfig`` reads it. LoRA's has no ``use_dora`` key, as before DoRA existed."""
    lora_alpha, use_rslora = peft_scaling(scaling, alpha, rank)
    record = registry.method(method or registry.default_method())
    dora = {"use_dora": True} if record.peft_use_dora else {}
    return {
        "base_model_name_or_path": None,
        "bias": bias,
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": registry.init(init).peft_init_lora_weights,
        "lora_alpha": lora_alpha,
        "lora_dropout": float(dropout),
        "peft_type": "LORA",
        "peft_version": PEFT_VERSION,
        "r": rank,
        "target_modules": [TARGET],
        "task_type": None,
        "use_rslora": use_rslora,
        **dora,
    }


def _safetensors_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return save(contiguous, metadata={"format": "pt"})


def write_adapter(
    folder: str | Path,
    spec,
    tensors: Mapping[str, torch.Tensor],
    base_weight: torch.Tensor | None = None,
) -> None:
    """Write a LoRA run's adapter as PEFT saves one (see the module docstring).

    ``spec`` is the run's :class:`~lorasweep.planning.runs.RunSpec`; ``tensors`` its trained
    ``lora_A``, ``lora_B`` and, with ``bias: lora_only``, ``bias``; ``base_weight`` the frozen
    weight it was trained against, required for PiSSA (the residual) and not written otherwise.
    """
    folder = Path(folder)
    if registry.replaces_base(spec.init) != (base_weight is not None):
        raise ValueError("the residual base weight is written for PiSSA runs, and only for them")
    state = {
        f"{PREFIX}lora_A.weight": tensors["lora_A"],
        f"{PREFIX}lora_B.weight": tensors["lora_B"],
    }
    if "magnitude" in tensors:
        state[MAGNITUDE_KEY] = tensors["magnitude"]
    if "bias" in tensors:
        state[BIAS_KEYS[0]] = tensors["bias"]
    write_bytes(folder / WEIGHTS_FILE, _safetensors_bytes(state))
    if base_weight is not None:
        write_bytes(folder / BASE_FILE, _safetensors_bytes({f"{TARGET}.weight": base_weight}))
    config = adapter_config(
        spec.rank, spec.alpha, spec.scaling, spec.init, spec.bias, spec.dropout, spec.method
    )
    write_json(folder / CONFIG_FILE, config)


def _dataset(dataset):
    """A :class:`~lorasweep.tasks.synthetic.Dataset`, loaded (and verified) if given a path to
    its ``.safetensors`` file, whose sidecar is the ``.json`` beside it."""
    if isinstance(dataset, str | Path):
        from lorasweep.tasks import storage

        path = Path(dataset)
        return storage.load(path, path.with_suffix(".json"))
    return dataset


def base_module(dataset, adapter: str | Path | None = None) -> BaseModel:
    """Rebuild a run's base module from its dataset (a ``Dataset`` or the path of its
    ``.safetensors`` file): :class:`BaseModel` with ``layer`` = (W₀, b₀).

    With ``adapter``, a run's ``peft/`` folder, the base is the one that adapter was trained
    against: for PiSSA the residual weight of ``base_layer.safetensors`` replaces W₀. Then
    ``PeftModel.from_pretrained(base_module(dataset, run_dir / "peft"), run_dir / "peft")``
    computes what the run's own model computes.
    """
    data = _dataset(dataset)
    spec = data.spec
    base = BaseModel(spec.in_features, spec.out_features)
    weight = data["W0"]
    if adapter is not None and (Path(adapter) / BASE_FILE).exists():
        weight = _load(Path(adapter) / BASE_FILE)[f"{TARGET}.weight"]
    with torch.no_grad():
        base.layer.weight.copy_(weight)
        base.layer.bias.copy_(data["b0"])
    return base


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _check_supported(config: Mapping) -> None:
    """Refuse adapters this layer cannot represent, naming the setting."""
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type {config.get('peft_type')!r} (only LORA)")
    targets = config.get("target_modules")
    if targets not in ([TARGET], TARGET):
        problems.append(f"target_modules {targets!r} (only [{TARGET!r}])")
    for key in ("lora_bias", "fan_in_fan_out", "rank_pattern", "alpha_pattern"):
        if config.get(key):
            problems.append(f"{key} {config[key]!r}")
    if config.get("bias", "none") not in ("none", "all", "lora_only"):
        problems.append(f"bias {config['bias']!r}")
    if problems:
        raise ValueError("unsupported PEFT adapter: " + "; ".join(problems))


def read_adapter(folder: str | Path, base: nn.Linear) -> nn.Module:
    """A PEFT LoRA adapter folder as a :class:`LoRALinear` around ``base`` (a
    :class:`~lorasweep.models.dora.DoRALinear` with ``use_dora``).

    ``base`` must be the layer the adapter was trained against (:func:`base_module` gives it).
    ``use_rslora`` becomes the ``rslora`` rule, otherwise ``standard``, with α = ``lora_alpha``;
    a trained bias (``bias`` ``all``, or ``lora_only``, the same for a single layer) replaces
    the base bias. An adapter saved with ``init_lora_weights="pissa"`` expects PEFT to turn the
    base into its PiSSA residual on loading; so does this function. LoRA biases,
    per-module patterns or other targets are refused.
    """
    folder = Path(folder)
    config = read_json(folder / CONFIG_FILE)
    _check_supported(config)
    state = _load(folder / WEIGHTS_FILE)
    lora_a, lora_b = state[f"{PREFIX}lora_A.weight"], state[f"{PREFIX}lora_B.weight"]
    rank = int(config["r"])
    if lora_a.shape != (rank, base.in_features) or lora_b.shape != (base.out_features, rank):
        raise ValueError(
            f"adapter shapes A {tuple(lora_a.shape)}, B {tuple(lora_b.shape)} do not fit rank "
            f"{rank} on a {base.in_features}→{base.out_features} layer"
        )
    trained_bias = next((state[key] for key in BIAS_KEYS if key in state), None)
    method = registry.method_from_peft(config.get("use_dora", False))
    layer = layer_class(method)(
        base,
        rank=rank,
        alpha=config.get("lora_alpha", 8),
        scaling=registry.scaling_from_peft(config.get("use_rslora", False)),
        init=registry.init_from_peft(config.get("init_lora_weights", True)),
        bias="none" if trained_bias is None else "lora_only",
        dropout=float(config.get("lora_dropout", 0.0)),
        generator=torch.Generator(),
    )
    with torch.no_grad():
        layer.lora_A.copy_(lora_a)
        layer.lora_B.copy_(lora_b)
        if registry.method(method).magnitude:
            layer.magnitude.copy_(state[MAGNITUDE_KEY])
        if trained_bias is not None:
            layer.base.bias.copy_(trained_bias)
    return layer


def load_adapter(folder: str | Path, dataset) -> nn.Module:
    """A PEFT adapter folder on the base of ``dataset`` (see :func:`base_module`), in eval mode."""
    return read_adapter(folder, base_module(dataset, folder).layer).eval()


@torch.no_grad()
def evaluate_adapter(folder: str | Path, dataset) -> dict[str, float]:
    """The mean squared error of a PEFT adapter folder on each split of ``dataset``, computed
    by this package's :class:`LoRALinear` as training computes its reference loss."""
    data = _dataset(dataset)
    layer = load_adapter(folder, data)
    return {
        split: float(nn.functional.mse_loss(layer(data[f"X_{split}"]), data[f"y_{split}"]))
        for split in ("train", "val")
    }
