"""One engine: every model kind's stacked objective satisfies the engine's typed interface, and
the pieces the batched engine shares with the single-run oracle are one."""

import pytest
import torch

from lorasweep.tasks import synthetic
from lorasweep.training.batched import _objective
from lorasweep.training.batched_deep import StackedNetwork
from lorasweep.training.batched_linear import StackedFull, StackedLoRA
from lorasweep.training.objective import StackedObjective
from tests.test_batched import full, lora
from tests.test_deep import MLP
from tests.test_deep import lora as deep_lora

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def layer_data():
    return synthetic.generate(
        synthetic.DatasetSpec(name="d", kind="lowrank", in_features=6, out_features=5,
                              n_train=32, n_val=8, noise_std=0.1, task_rank=2)
    )  # fmt: skip


@pytest.fixture(scope="module")
def net_data():
    return synthetic.generate(synthetic.DatasetSpec.from_config({**MLP, "n_train": 16, "n_val": 8}))


@pytest.mark.parametrize(
    ("spec", "kind"),
    [(lora(), StackedLoRA), (full(), StackedFull), (lora(method="dora"), StackedNetwork)],
    ids=["lora", "full", "dora"],
)
def test_single_layer_objectives_satisfy_the_protocol(layer_data, spec, kind):
    objective = _objective([spec], layer_data, CPU, 8)[0]
    assert type(objective) is kind
    assert isinstance(objective, StackedObjective)


def test_a_networks_objective_satisfies_the_protocol(net_data):
    objective = _objective([deep_lora("net")], net_data, CPU, 8)[0]
    assert type(objective) is StackedNetwork
    assert isinstance(objective, StackedObjective)


def test_the_protocol_names_what_the_engine_asks_for():
    class Missing:
        params = None
        norm_columns: dict = {}
        cached_base = False

        def learning_rates(self, specs):
            return {}

        def train_step(self, rows):
            return torch.zeros(1)

        def evaluate(self, split):
            return torch.zeros(1)

        def tensors(self, slot):
            return {}

    assert not isinstance(Missing(), StackedObjective), "keep is missing"
