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


@pytest.mark.parametrize("which", ["lora", "dora", "full", "net"])
def test_the_one_state_bytes_rule_is_what_torch_adam_holds(layer_data, net_data, which):
    """The oracle records :func:`state_bytes` rather than measuring its own optimizer: the rule
    is held here to the live tensors of ``torch.optim.Adam``, before and after a step."""
    from lorasweep.models.accounting import training_state_bytes
    from lorasweep.training.loop import build_model, param_groups
    from lorasweep.training.stacked import state_bytes

    spec = {"lora": lora(bias="lora_only"), "dora": lora(method="dora"), "full": full(),
            "net": deep_lora("net")}[which]  # fmt: skip
    data = net_data if which == "net" else layer_data
    model = build_model(spec, data, CPU)
    optimizer = torch.optim.Adam(param_groups(spec, model))
    numels = [p.numel() for p in model.parameters() if p.requires_grad]
    assert state_bytes(numels, stepped=False) == training_state_bytes(model, optimizer)
    torch.nn.functional.mse_loss(model(data["X_train"]), data["y_train"]).backward()
    optimizer.step()
    assert state_bytes(numels, stepped=True) == training_state_bytes(model, optimizer)


def test_adam_groups_and_slot_rates_are_one_rule(layer_data):
    """The oracle's parameter groups and the engine's per-slot rates both come from
    :func:`~lorasweep.training.records.tensor_rate`."""
    from lorasweep.training.loop import build_model, param_groups

    spec = lora(bias="lora_only", lr=0.02, lr_ratio=8.0)
    model = build_model(spec, layer_data, CPU)
    names = {id(p): n for n, p in model.named_parameters()}
    rates = {names[id(p)]: g["lr"] for g in param_groups(spec, model) for p in g["params"]}
    assert rates == {"lora_A": 0.02, "lora_B": 0.02 * 8.0, "base.bias": 0.02}
    objective = _objective([spec], layer_data, CPU, 8)[0]
    slot = {k: v[0] for k, v in objective.learning_rates([spec]).items()}
    assert slot == {"A": rates["lora_A"], "Bt": rates["lora_B"], "bias": rates["base.bias"]}
