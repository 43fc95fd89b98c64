"""Replicated tasks at the data layer: a task seed other than 0 redraws W₀, ΔW*, the splits and
the noise; task seed 0 is the dataset as it always was; the same task seed gives the same
bytes."""

import math

import pytest
import torch

from lorasweep.io import sha256_file
from lorasweep.seeding import generator
from lorasweep.tasks import storage, synthetic

from .test_test_split import KINDS


def generate(kind: str, **overrides) -> synthetic.Dataset:
    return synthetic.generate(synthetic.DatasetSpec(**{**KINDS[kind], **overrides}))


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_task_seed_gives_the_same_bytes(kind, tmp_path):
    paths = []
    for copy in ("a", "b"):
        paths.append((tmp_path / f"{copy}.safetensors", tmp_path / f"{copy}.json"))
        storage.save(generate(kind, task_seed=2), *paths[-1])
    assert sha256_file(paths[0][0]) == sha256_file(paths[1][0])
    assert paths[0][1].read_text() == paths[1][1].read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_another_task_seed_redraws_every_tensor(kind):
    today, other = generate(kind), generate(kind, task_seed=1)
    assert today.tensors.keys() == other.tensors.keys()
    for key, tensor in today.tensors.items():
        if tensor.std() > 0 and not key.endswith("norms.0.weight"):
            assert not torch.equal(tensor, other[key]), key


def test_task_seeds_share_the_spectrum_but_not_the_directions():
    truths = [synthetic.ground_truth(generate("lowrank", task_seed=k)) for k in (0, 1, 5)]
    for truth in truths[1:]:
        for mine, ref in zip(truth.singular_values, truths[0].singular_values, strict=True):
            assert mine == pytest.approx(ref, rel=1e-5, abs=1e-6)
    shifts = [generate("lowrank", task_seed=k)["delta_W"].double() for k in (0, 1, 5)]
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        cosine = (shifts[a] * shifts[b]).sum() / (shifts[a].norm() * shifts[b].norm())
        assert abs(float(cosine)) < 0.5


def test_task_seed_zero_is_the_dataset_as_it_was():
    spec = synthetic.DatasetSpec(**KINDS["lowrank"])
    assert spec.task_seed == 0 and "task_seed" not in spec.as_dict()
    assert synthetic.DatasetSpec(**KINDS["lowrank"], task_seed=3).as_dict()["task_seed"] == 3
    data = synthetic.generate(spec)
    gen = generator(3, "t", "base")
    w0 = torch.randn(12, 20, generator=gen, dtype=torch.float64) / math.sqrt(20)
    assert torch.equal(data["W0"], w0.float())
    round_trip = synthetic.DatasetSpec.from_config(spec.as_dict() | {"task_seed": 3})
    assert round_trip.task_seed == 3
