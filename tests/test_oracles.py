"""The closed-form oracles: OLS against torch.linalg.lstsq, reduced-rank regression against a
brute-force rank-r fit, and the table."""

import math

import pytest
import torch

from lorasweep.planning.runs import RunSpec, rank_settings
from lorasweep.tables import oracles
from lorasweep.tasks import synthetic
from lorasweep.tasks.synthetic import SourceSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = dict(name="o", kind="lowrank", in_features=10, out_features=8, n_train=120, n_val=40,
            noise_std=0.3, task_rank=3, task_scale=2.0, spectrum_decay=0.7, seed=2)  # fmt: skip
DATASETS = {
    "isotropic": BASE,
    "anisotropic": {**BASE, "source": SourceSpec(n=20, top_directions=4, leak=0.05)},
}


def generate(entry: dict, **overrides) -> synthetic.Dataset:
    return synthetic.generate(synthetic.DatasetSpec(**{**entry, **overrides}))


def train_loss(x, r, delta, offset) -> float:
    return float((r - x @ delta.T - offset).square().mean())


@pytest.mark.parametrize("name", DATASETS)
def test_ols_oracle_is_torch_lstsq_of_y_on_x_and_one(name):
    data = generate(DATASETS[name])
    delta, offset = oracles.least_squares(*oracles.residuals(data)["train"], intercept=True)
    x, y = data["X_train"].double(), data["y_train"].double()
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, y).solution
    torch.testing.assert_close(data["W0"].double() + delta, solution[:-1].T, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(data["b0"].double() + offset, solution[-1], rtol=1e-9, atol=1e-9)


def brute_force(x, r, rank: int, intercept: bool, starts: int = 1) -> float:
    """The lowest training loss L-BFGS finds over factors B (d_out×r), A (r×d_in) and, with
    ``intercept``, an offset, from ``starts`` random starting points."""
    gen = torch.Generator().manual_seed(0)
    best = math.inf
    for _ in range(starts):
        b = torch.randn(r.shape[1], rank, generator=gen, dtype=torch.float64).requires_grad_()
        a = torch.randn(rank, x.shape[1], generator=gen, dtype=torch.float64).requires_grad_()
        offset = torch.zeros(r.shape[1], dtype=torch.float64, requires_grad=intercept)
        params = [b, a, offset] if intercept else [b, a]
        opt = torch.optim.LBFGS(params, max_iter=300, tolerance_grad=1e-12,
                                tolerance_change=1e-14, line_search_fn="strong_wolfe")  # fmt: skip

        def closure(a=a, b=b, offset=offset, opt=opt):
            opt.zero_grad()
            loss = (r - x @ (b @ a).T - offset).square().mean()
            loss.backward()
            return loss

        opt.step(closure)
        best = min(best, train_loss(x, r, (b @ a).detach(), offset.detach()))
    return best


@pytest.mark.parametrize("intercept", [False, True], ids=["bias frozen", "bias trains"])
@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("rank", [1, 3])
def test_reduced_rank_oracle_is_the_best_rank_r_fit(name, rank, intercept):
    data = generate(DATASETS[name])
    x, r = oracles.residuals(data)["train"]
    delta, offset = oracles.reduced_rank(x, r, rank, intercept)
    assert torch.linalg.matrix_rank(delta) <= rank
    if not intercept:
        assert torch.count_nonzero(offset) == 0
    oracle = train_loss(x, r, delta, offset)
    assert oracle == pytest.approx(brute_force(x, r, rank, intercept), rel=1e-9)
    u, sv, vh = torch.linalg.svd(delta)
    b0, a0 = u[:, :rank] * sv[:rank], vh[:rank]
    gen = torch.Generator().manual_seed(1)
    for _ in range(100):
        b = torch.randn(8, rank, generator=gen, dtype=torch.float64)
        a = torch.randn(rank, 10, generator=gen, dtype=torch.float64)
        nearby = (b0 + 1e-2 * b) @ (a0 + 1e-2 * a)
        assert train_loss(x, r, nearby, offset) > oracle
        assert train_loss(x, r, b @ a, offset) > oracle


def test_reduced_rank_at_full_rank_is_least_squares():
    data = generate(DATASETS["anisotropic"])
    x, r = oracles.residuals(data)["train"]
    for intercept in (False, True):
        full = oracles.least_squares(x, r, intercept)
        for got, want in zip(oracles.reduced_rank(x, r, 8, intercept), full, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def lora(rank: int, bias: str = "none") -> RunSpec:
    return RunSpec(dataset="o", method="lora", seed=0, lr=0.01, epochs=1, batch_size=None,
                   bias=bias, device="cpu", rank=rank, alpha=1.0, scaling="standard",
                   init="kaiming")  # fmt: skip


def test_the_table_has_full_and_each_rank_with_its_losses():
    data = {"o": generate(DATASETS["anisotropic"]), "n": generate(BASE, name="n", kind="noise",
                                                                   task_rank=0)}  # fmt: skip
    runs = [lora(1), lora(4), lora(4, "lora_only"), lora(1)]
    runs += [RunSpec(**{**lora(2).__dict__, "dataset": "n"})]
    runs += [RunSpec(dataset="o", method="full", seed=0, lr=0.01, epochs=1, batch_size=None,
                     bias="none", device="cpu")]  # fmt: skip
    settings = rank_settings(runs)
    assert settings == {"n": [(2, "none")], "o": [(1, "none"), (4, "lora_only"), (4, "none")]}
    table = oracles.oracle_table(data, settings)
    assert list(table.columns) == oracles.COLUMNS
    keys = list(zip(table["dataset"], table["oracle"], table["rank"].astype(object),
                    table["bias"], strict=True))  # fmt: skip
    assert keys == [("n", "oracle_full", pd_na(), "lora_only"), ("n", "oracle_lora", 2, "none"),
                    ("o", "oracle_full", pd_na(), "lora_only"),
                    ("o", "oracle_lora", 4, "lora_only"), ("o", "oracle_lora", 1, "none"),
                    ("o", "oracle_lora", 4, "none")]  # fmt: skip
    mine = table[table["dataset"] == "o"].set_index(["oracle", "bias", "rank"])
    assert table[table["dataset"] == "n"]["population_loss"].isna().all()
    truth = synthetic.ground_truth(data["o"])
    assert mine["train_loss"].min() == mine.loc[("oracle_full", "lora_only"), "train_loss"].iloc[0]
    for (oracle, bias, rank), row in mine.iterrows():
        rank = None if oracle == "oracle_full" else int(rank)
        bound = truth.optimal_loss(rank, bias_trains=bias == "lora_only")
        assert row["population_loss"] >= bound * (1 - 1e-9)
        assert all(math.isfinite(row[f"{split}_loss"]) for split in ("train", "val", "test"))
    one = mine.loc[("oracle_lora", "none", 1)]
    four = mine.loc[("oracle_lora", "none", 4)]
    assert four["train_loss"] < one["train_loss"]


def pd_na():
    import pandas as pd

    return pd.NA


def test_deep_datasets_have_no_oracle_rows():
    deep = synthetic.generate(
        synthetic.DatasetSpec(name="m", kind="mlp", in_features=6, out_features=5, d_model=8,
                              n_layers=2, task_rank=1, noise_std=0.1, n_train=40, n_val=10,
                              shifted="all")
    )  # fmt: skip
    table = oracles.oracle_table({"m": deep}, {"m": [(1, "none")]})
    assert table.empty and list(table.columns) == oracles.COLUMNS


def test_each_replicate_has_its_own_oracles():
    data = {"o": generate(BASE), "o.t2": generate(BASE, task_seed=2)}
    table = oracles.oracle_table(data, {"o": [(2, "none")], "o.t2": [(2, "none")]})
    assert list(table["dataset"]) == ["o"] * 4 and list(table["task_seed"]) == [0, 0, 2, 2]
    by_seed = table.set_index(["task_seed", "oracle"])["train_loss"]
    assert by_seed[(0, "oracle_lora")] != by_seed[(2, "oracle_lora")]
