"""The seed tutorial's random numbers, draw for draw: datasets with ``compat: tutorial``.

The tutorial this project started from (a 64→10 LoRA demo) calls ``torch.manual_seed(42)`` and
then takes, in this order, from that one stream::

    X = torch.randn(1000, 64)              # create_toy_dataset
    y = torch.randn(1000, 10)
    linear = nn.Linear(64, 10)             # kaiming_uniform_(weight, a=√5), bias ~ U(±1/√64)
    lora_A = torch.randn(64, 4)            # in_features × rank
    lora_B = torch.randn(4, 10)            # rank × out_features

A ``noise`` dataset with ``compat: tutorial`` draws its training split and base layer from one
``torch.Generator`` seeded with the dataset's ``seed`` (another task seed than 0 seeds it with
``derive_seed(seed, "task_seed", task_seed)``) in the same order and shapes (y is
multiplied by ``noise_std``, 1 in the tutorial), and a LoRA run on it with ``init: randn`` takes A
and B from the next draws of that stream, in this package's layout: A (r × d_in) = ``lora_A``ᵀ
and B (d_out × r) = ``lora_B``ᵀ. The run's own seed then plays no part in its initialisation.
The validation split, which the tutorial does not have, comes from the dataset's usual
``val`` stream, so it takes nothing from the tutorial's.

Such runs also compute the tutorial's arithmetic: the float32 reference loss
``mse_loss(model(x), y)`` by autograd, not the exact fast paths (cached residuals, float64
sufficient statistics), which agree with it to about 1e-7 relative but not to the last printed
digit (the tutorial's third loss, 225.91595, sits 5e-6 above a rounding boundary).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lorasweep.seeding import derive_seed

COMPAT = "tutorial"


def is_tutorial(spec) -> bool:
    """Whether a dataset spec asks for the tutorial's random stream and arithmetic."""
    return getattr(spec, "compat", "none") == COMPAT


def _stream(spec, rank: int | None = None) -> dict[str, torch.Tensor]:
    """The tutorial's draws up to the base layer (and the adapter, given ``rank``)."""
    gen = torch.Generator(device="cpu")
    task_seed = getattr(spec, "task_seed", 0)
    gen.manual_seed(derive_seed(spec.seed, "task_seed", task_seed) if task_seed else spec.seed)
    d_in, d_out = spec.in_features, spec.out_features
    tensors = {
        "X_train": torch.randn(spec.n_train, d_in, generator=gen),
        "y_train": spec.noise_std * torch.randn(spec.n_train, d_out, generator=gen),
    }
    # nn.Linear.reset_parameters, with the generator in place of the global stream.
    weight, bias = torch.empty(d_out, d_in), torch.empty(d_out)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
    bound = 1 / math.sqrt(d_in)
    nn.init.uniform_(bias, -bound, bound, generator=gen)
    tensors |= {"W0": weight, "b0": bias}
    if rank is not None:
        tensors["lora_A"] = torch.randn(d_in, rank, generator=gen).T.contiguous()
        tensors["lora_B"] = torch.randn(rank, d_out, generator=gen).T.contiguous()
    return tensors


def training_split_and_base(spec) -> dict[str, torch.Tensor]:
    """``X_train``, ``y_train``, ``W0`` and ``b0`` (float32) as the tutorial draws them."""
    return _stream(spec)


@torch.no_grad()
def initialise_adapter(layer, spec) -> None:
    """Set a LoRA layer's A and B to the tutorial's ``randn`` draws for its rank."""
    tensors = _stream(spec, layer.rank)
    layer.lora_A.copy_(tensors["lora_A"])
    layer.lora_B.copy_(tensors["lora_B"])
