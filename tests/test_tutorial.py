"""The seed demo preset reproduces the tutorial's own printed numbers: its code, taken from the
tutorial page in ../shared/seeds, is run as written and its output compared with the preset's."""

import re
import subprocess
import sys

import pandas as pd
import pytest
import torch
from torch import nn

from lorasweep.sequential import load_config, run_in_process
from lorasweep.tasks import synthetic, tutorial

from .conftest import REPO, required_in_ci

pytestmark = pytest.mark.tutorial

TUTORIAL = REPO.parent / "shared" / "seeds" / "000_0c5ccd2136e007bc.txt"
PRESET = REPO / "config" / "seed_demo.yaml"


def tutorial_script(page: str) -> str:
    """The page's python code blocks in order, plus the one import the page leaves out."""
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) == 4 and "optim.Adam" in blocks[2] and "import torch.optim" not in page
    return "import torch.optim as optim\n" + "\n".join(blocks)


@pytest.fixture(scope="module")
def printed(tmp_path_factory) -> dict:
    """What the tutorial prints: its parameter counts and its loss each epoch."""
    if not TUTORIAL.is_file():
        required_in_ci("LORASWEEP_REQUIRE_SEEDS", f"the tutorial page {TUTORIAL} is not here")
    script = tmp_path_factory.mktemp("tutorial") / "tutorial.py"
    script.write_text(tutorial_script(TUTORIAL.read_text(encoding="utf-8")), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=True
    )
    epochs = re.findall(r"^Epoch (\d+)/10, Loss: (\d+\.\d{4})$", result.stdout, flags=re.M)
    assert [int(e) for e, _ in epochs] == list(range(1, 11)), result.stdout
    counts = [int(n) for n in re.findall(r"Paramètres \w+: (\d+)", result.stdout)]
    return {"losses": [text for _, text in epochs], "counts": counts}


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seed demo preset, trained by the same jobs the workflow runs."""
    results = tmp_path_factory.mktemp("seed_demo")
    run_in_process(load_config(PRESET), results)
    runs = pd.read_csv(results / "tables" / "runs.csv")
    epochs = pd.read_csv(results / "tables" / "epochs.csv")
    return runs, epochs


def tutorial_run(runs: pd.DataFrame) -> pd.Series:
    demo = runs[(runs["dataset"] == "seed_demo") & (runs["init"] == "randn")]
    assert len(demo) == 1
    return demo.iloc[0]


def test_preset_training_losses_are_the_tutorials_printed_losses(printed, preset):
    """The tutorial prints each epoch's loss before that epoch's step; epochs.csv's train_loss
    of epoch k (k ≥ 1, one full batch) is measured at the same moment."""
    runs, epochs = preset
    run_id = tutorial_run(runs)["run_id"]
    curve = epochs[epochs["run_id"] == run_id].set_index("epoch")["train_loss"]
    ours = [f"{curve[k]:.4f}" for k in range(1, 11)]
    assert ours == printed["losses"]
    assert printed["losses"][0] == "243.7067" and printed["losses"][-1] == "173.2909"
    assert curve[0] == curve[1], "no step happens between epoch 0's and epoch 1's measurement"


def test_preset_counts_are_the_tutorials_printed_counts(printed, preset):
    row = tutorial_run(preset[0])
    assert printed["counts"] == [306, 946]
    assert [row["trainable_params"], row["total_params"]] == printed["counts"]


def test_preset_adds_the_corrected_method_on_both_datasets(preset):
    runs, _ = preset
    corrected = runs[runs["init"] == "kaiming"]
    assert set(corrected["dataset"]) == {"seed_demo", "seed_demo_learnable"}
    assert (corrected["bias"] == "none").all() and (corrected["scaling"] == "standard").all()
    assert (corrected["trainable_params"] == 4 * (64 + 10)).all()
    assert (runs["status"] == "ok").all()
    learnable = corrected[corrected["dataset"] == "seed_demo_learnable"].iloc[0]
    assert learnable["final_val_loss"] < learnable["initial_val_loss"]


def test_stream_is_the_tutorials_global_stream():
    """Without the page: the dataset's draws are torch.manual_seed(42)'s, in the same order."""
    spec = synthetic.DatasetSpec.from_config(load_config(PRESET)["datasets"][0] | {"n_val": 7})
    data = synthetic.generate(spec)
    with torch.random.fork_rng():
        torch.manual_seed(42)
        x, y = torch.randn(1000, 64), torch.randn(1000, 10)
        linear = nn.Linear(64, 10)
        lora_a, lora_b = torch.randn(64, 4), torch.randn(4, 10)
    assert torch.equal(data["X_train"], x) and torch.equal(data["y_train"], y)
    assert torch.equal(data["W0"], linear.weight) and torch.equal(data["b0"], linear.bias)
    layer = nn.Module()
    layer.rank = 4
    layer.lora_A, layer.lora_B = nn.Parameter(torch.empty(4, 64)), nn.Parameter(torch.empty(10, 4))
    tutorial.initialise_adapter(layer, spec)
    assert torch.equal(layer.lora_A, lora_a.T) and torch.equal(layer.lora_B, lora_b.T)
    other = synthetic.generate(synthetic.DatasetSpec(**{**spec.__dict__, "n_val": 200}))
    assert torch.equal(other["X_train"], x), "the validation split takes nothing from the stream"
    assert data["X_val"].shape == (7, 64)
