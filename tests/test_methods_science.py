"""The method comparison against the ground truth of a rank-k task: LoRA and DoRA at r ≥ k
reach the noise floor σ² within 10 % on the test split at their best learning rate (chosen on
validation); IA3, which can only rescale W₀'s rows, cannot represent the additive shift and
stays at least 25 % above it at every rate."""

import pytest
import torch

from lorasweep.planning.runs import RunSpec
from lorasweep.tasks import synthetic
from lorasweep.training.batched import train_cohort
from lorasweep.training.peft_trainer import train_peft_run

from .conftest import required_in_ci

pytestmark = [pytest.mark.peft, pytest.mark.usefixtures("one_torch_thread")]

CPU = torch.device("cpu")
TASK = dict(name="sci", kind="lowrank", in_features=32, out_features=24, task_rank=2,
            task_scale=1.0, spectrum_decay=0.5, noise_std=0.1, n_train=4096, n_val=512,
            n_test=2048, seed=5)  # fmt: skip
FLOOR = TASK["noise_std"] ** 2
COMMON = dict(dataset="sci", seed=0, epochs=40, batch_size=256, bias="none", device="cpu")
RATES = [0.001, 0.003, 0.01, 0.03]


@pytest.fixture(scope="module")
def task():
    return synthetic.generate(synthetic.DatasetSpec.from_config(TASK))


@pytest.mark.parametrize("rank", [2, 4])
@pytest.mark.parametrize("method", ["lora", "dora"])
def test_low_rank_adapters_reach_the_floor_at_their_best_rate(task, method, rank):
    specs = [RunSpec(method=method, lr=lr, rank=rank, alpha=2 * rank, scaling="standard",
                     init="kaiming", **COMMON) for lr in RATES]  # fmt: skip
    results = train_cohort(specs, task, CPU)
    best = min(results, key=lambda r: r.final["val_loss"])
    assert best.test_loss <= 1.10 * FLOOR, (best.spec.lr, best.test_loss / FLOOR)


def test_ia3_cannot_learn_an_additive_shift(peft, task):
    losses = {}
    for lr in [0.003, 0.03, 0.3]:
        result = train_peft_run(RunSpec(method="ia3", lr=lr, **COMMON), task, CPU)
        losses[lr] = result.test_loss
    assert min(losses.values()) >= 1.25 * FLOOR, losses


@pytest.fixture(scope="module")
def peft():
    try:
        import peft
    except ImportError:
        required_in_ci("LORASWEEP_REQUIRE_PEFT", "PEFT is not installed (pip install -e '.[dev]')")
    return peft
