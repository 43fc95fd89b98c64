"""The batched engine against the single-run path: Adam bitwise, losses to 1e-5, a run's numbers
bitwise independent of its cohort and of its wave, divergence of one run while others go on."""

import dataclasses
import math

import pytest
import torch

from lorasweep.planning.resources import cohort_waves, run_bytes
from lorasweep.planning.runs import RunSpec
from lorasweep.tasks import synthetic
from lorasweep.training.batched import train_cohort
from lorasweep.training.exact import cache_base_residuals
from lorasweep.training.loop import train_run
from lorasweep.training.stacked import SlotLayout, StackedAdam, StackedParameters

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return synthetic.generate(
        synthetic.DatasetSpec(name="d", kind="lowrank", in_features=16, out_features=12,
                              n_train=256, n_val=64, noise_std=0.1, task_rank=2, task_scale=2.0,
                              spectrum_decay=0.5)
    )  # fmt: skip


def lora(**overrides) -> RunSpec:
    base = dict(dataset="d", method="lora", seed=0, lr=0.01, epochs=4, batch_size=64, bias="none",
                device="cpu", rank=4, alpha=8.0, scaling="standard", init="kaiming")  # fmt: skip
    return RunSpec(**{**base, **overrides})


def full(**overrides) -> RunSpec:
    base = dict(dataset="d", method="full", seed=0, lr=0.01, epochs=4, batch_size=64,
                bias="none", device="cpu")  # fmt: skip
    return RunSpec(**{**base, **overrides})


def assert_bitwise(a, b):
    assert a.epochs == b.epochs
    assert a.test_loss == b.test_loss and a.population_loss == b.population_loss
    assert a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def stacked_and_torch_adam(device: torch.device, steps: int):
    """Three runs' tensors stepped ``steps`` times on the same random gradients by the batched
    Adam and by one ``torch.optim.Adam`` per run, with a learning rate per run and tensor: the
    stacked parameters and, per run, the reference leaves."""
    gen = torch.Generator().manual_seed(0)
    shapes = {"A": (3, 7), "Bt": (3, 5), "bias": (5,)}
    rates = {"A": [1e-3, 3e-2, 0.1], "Bt": [4e-3, 3e-2, 1e-4], "bias": [1e-3, 1e-3, 2e-2]}
    params = StackedParameters(SlotLayout.of(shapes), 3, device)
    references = []
    for run in range(3):
        tensors = {n: torch.randn(shape, generator=gen).to(device) for n, shape in shapes.items()}
        for name, value in tensors.items():
            params[name][run] = value
        leaves = {name: torch.nn.Parameter(value.clone()) for name, value in tensors.items()}
        groups = [{"params": [leaves[n]], "lr": rates[n][run]} for n in shapes]
        references.append((leaves, torch.optim.Adam(groups)))
    adam = StackedAdam(params, rates)
    for _ in range(steps):
        for run, (leaves, optimizer) in enumerate(references):
            for name, leaf in leaves.items():
                leaf.grad = torch.randn(leaf.shape, generator=gen).to(device)
                params.grad_of(name)[run] = leaf.grad
            optimizer.step()
        adam.step()
    return params, [leaves for leaves, _ in references]


def test_stacked_adam_equals_torch_adam_bitwise_with_a_rate_per_run_and_tensor():
    params, references = stacked_and_torch_adam(CPU, steps=25)
    for run, leaves in enumerate(references):
        for name, leaf in leaves.items():
            assert torch.equal(params[name][run], leaf.detach()), (run, name)


BATCHES = {
    "lora grid": [lora(), lora(seed=1, alpha=2.0), lora(scaling="rslora", lr=0.003),
                  lora(lr_ratio=4.0), lora(init="randn"), lora(init="gaussian", seed=2)],
    "rank 1": [lora(rank=1), lora(rank=1, alpha=1.0, seed=3)],
    "bias trains": [lora(bias="lora_only"),
                    lora(bias="lora_only", seed=2, scaling="constant", alpha=0.5)],
    "dropout": [lora(dropout=0.2), lora(dropout=0.2, seed=1)],
    "full batch": [lora(batch_size=None), lora(batch_size=None, alpha=3.0, seed=1)],
    "full batch, bias trains": [lora(batch_size=None, bias="lora_only"),
                                lora(batch_size=None, bias="lora_only", seed=4)],
    "pissa": [lora(init="pissa"), lora(init="pissa", seed=3, alpha=2.0)],
    "full fine-tuning": [full(), full(seed=1, lr=0.003)],
    "full fine-tuning, full batch": [full(batch_size=None), full(batch_size=None, lr=0.02)],
    "alone": [lora(init="randn", bias="lora_only", batch_size=None, scaling="constant", alpha=1.0)],
    "dora": [lora(method="dora"), lora(method="dora", seed=1, alpha=2.0, lr_ratio=4.0),
             lora(method="dora", scaling="rslora", init="gaussian", lr=0.003)],
    "dora, randn, bias trains": [lora(method="dora", init="randn", bias="lora_only"),
                                 lora(method="dora", init="randn", bias="lora_only", seed=2)],
    "dora, dropout": [lora(method="dora", dropout=0.2), lora(method="dora", dropout=0.2, seed=1)],
    "dora, pissa, full batch": [lora(method="dora", init="pissa", batch_size=None),
                                lora(method="dora", init="pissa", batch_size=None, seed=3)],
}  # fmt: skip


def assert_same_run(batched, single, noise_only: tuple[str, ...] = ()) -> None:
    """A batched run's result against the single-run path's: per-epoch losses and the final
    test loss within 1e-5 relative, gradient norms, trained tensors and the population loss
    within 1e-4 (but tensors whose names end in ``noise_only``, which only rounding moves),
    everything else equal."""
    assert batched.spec == single.spec and batched.status == single.status == "ok"
    assert len(batched.epochs) == len(single.epochs) == single.spec.epochs + 1
    for mine, ref in zip(batched.epochs, single.epochs, strict=True):
        assert mine.keys() == ref.keys() and mine["epoch"] == ref["epoch"]
        assert mine["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-5)
        assert mine["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)
        for column in ("grad_norm_A", "grad_norm_B", "grad_norm_W"):
            if column in ref:
                assert mine[column] == pytest.approx(ref[column], rel=1e-4, nan_ok=True)
    assert batched.tensors.keys() == single.tensors.keys()
    for key, tensor in single.tensors.items():
        assert batched.tensors[key].shape == tensor.shape
        if not key.endswith(noise_only):
            torch.testing.assert_close(batched.tensors[key], tensor, rtol=1e-4, atol=1e-6)
    assert batched.initial_tensors.keys() == single.initial_tensors.keys()
    for key, tensor in single.initial_tensors.items():
        assert torch.equal(batched.initial_tensors[key], tensor)
    assert batched.counts == single.counts
    assert batched.train_state_bytes == single.train_state_bytes
    assert batched.scaling == single.scaling and batched.cached_base == single.cached_base
    assert batched.adapted == single.adapted
    if single.base_weight is None:
        assert batched.base_weight is None
    else:
        assert torch.equal(batched.base_weight, single.base_weight)
    assert batched.summary(None).keys() == single.summary(None).keys()
    assert (batched.test_loss is None) == (single.test_loss is None)
    if single.test_loss is not None:
        assert batched.test_loss == pytest.approx(single.test_loss, rel=1e-5)
    assert (batched.population_loss is None) == (single.population_loss is None)
    if single.population_loss is not None:
        assert batched.population_loss == pytest.approx(single.population_loss, rel=1e-4)


@pytest.mark.parametrize("name", BATCHES, ids=list(BATCHES))
def test_batched_losses_equal_the_single_run_path(data, name):
    specs = BATCHES[name]
    for batched, spec in zip(train_cohort(specs, data), specs, strict=True):
        assert batched.spec == spec
        assert_same_run(batched, train_run(spec, data))


def test_a_source_task_is_evaluated_every_epoch_as_the_single_run_path_does():
    spec = synthetic.DatasetSpec.from_config(
        dict(name="d", kind="lowrank", in_features=16, out_features=12, n_train=256, n_val=64,
             noise_std=0.1, task_rank=2, seed=5, source={"n": 100, "top_directions": 3})
    )  # fmt: skip
    with_source = synthetic.generate(spec)
    specs = [lora(), lora(seed=1, alpha=2.0), full()]
    job_data = synthetic.Dataset(spec, {k: v.clone() for k, v in with_source.tensors.items()})
    cache_base_residuals(job_data, specs)
    for cohort in (specs[:2], specs[2:]):
        for batched, run in zip(train_cohort(cohort, job_data), cohort, strict=True):
            single = train_run(run, job_data)
            for mine, ref in zip(batched.epochs, single.epochs, strict=True):
                assert mine.keys() == ref.keys() and "source_loss" in mine
                assert mine["source_loss"] == pytest.approx(ref["source_loss"], rel=1e-5)
            assert batched.forgetting()["forgetting"] == pytest.approx(
                single.forgetting()["forgetting"], rel=1e-4, abs=1e-7
            )


def test_tutorial_datasets_train_in_the_engine_bitwise_as_the_oracle():
    """A ``compat: tutorial`` dataset's runs are batched like any other, through the generic
    objective: every number equals the autograd oracle's bitwise, so the tutorial's printed
    float32 losses are reproduced (tests/test_tutorial.py checks them against the page)."""
    from lorasweep.planning.cohorts import plan_cohorts
    from lorasweep.training.batched_deep import StackedNetwork
    from lorasweep.training.batched_linear import StackedLoRA

    spec = synthetic.DatasetSpec(name="t", kind="noise", in_features=64, out_features=10,
                                 noise_std=1.0, n_train=1000, n_val=200, seed=42,
                                 compat="tutorial")  # fmt: skip
    tutorial_data = synthetic.generate(spec)
    demo = lora(dataset="t", seed=42, epochs=10, batch_size=None, bias="lora_only", alpha=1.0,
                scaling="constant", init="randn")  # fmt: skip
    specs = [demo, dataclasses.replace(demo, lr=0.003)]
    assert len(plan_cohorts(specs, datasets={"t": spec.as_dict()})) == 1
    for batched, run in zip(train_cohort(specs, tutorial_data), specs, strict=True):
        assert_bitwise(batched, train_run(run, tutorial_data))
    assert f"{train_cohort([demo], tutorial_data)[0].epochs[1]['train_loss']:.4f}" == "243.7067"
    from lorasweep.training.batched import _objective

    assert type(_objective([demo], tutorial_data, CPU, 1000)[0]) is StackedNetwork
    plain = synthetic.Dataset(dataclasses.replace(spec, compat="none"), tutorial_data.tensors)
    assert type(_objective([demo], plain, CPU, 1000)[0]) is StackedLoRA


def test_a_batch_must_share_its_key(data):
    with pytest.raises(ValueError, match="do not share a cohort"):
        train_cohort([lora(), lora(rank=2)], data)


def test_batched_losses_equal_the_single_run_path_on_the_jobs_cached_residuals(data):
    specs = [lora(), lora(rank=2, bias="lora_only"), full()]
    job_data = synthetic.Dataset(data.spec, {k: v.clone() for k, v in data.tensors.items()})
    cache_base_residuals(job_data, specs)
    for cohort in (specs[:1], specs[1:2], specs[2:]):
        batched, single = train_cohort(cohort, job_data)[0], train_run(cohort[0], job_data)
        for mine, ref in zip(batched.epochs, single.epochs, strict=True):
            assert mine["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)


INDEPENDENCE = {
    "rank 1": {"rank": 1},
    "bias trains": {"bias": "lora_only"},
    "dropout": {"dropout": 0.3},
    "full batch": {"batch_size": None},
    "pissa": {"init": "pissa"},
}


@pytest.mark.parametrize("case", INDEPENDENCE, ids=list(INDEPENDENCE))
def test_a_runs_numbers_do_not_depend_on_its_batch_bitwise(data, case):
    """Alone (with its twin), with runs of its own seed (rows shared), with runs of other
    seeds (rows gathered per run), and split one run at a time: the same bits."""
    target = lora(**INDEPENDENCE[case])
    same_seed = [lora(**{**INDEPENDENCE[case], "alpha": a}) for a in (2.0, 3.0, 5.0, 6.0)]
    other_seeds = [lora(**{**INDEPENDENCE[case], "seed": s, "lr": 0.02}) for s in (1, 2)]
    alone = train_cohort([target], data)[0]
    assert_bitwise(train_cohort([*same_seed[:2], target, same_seed[2]], data)[2], alone)
    assert_bitwise(train_cohort([*other_seeds, target], data)[-1], alone)
    assert_bitwise(train_cohort([*same_seed, target, *other_seeds], data)[4], alone)
    tiny_budget = 1e-6
    assert_bitwise(
        train_cohort([*other_seeds, target], data, memory_budget_mib=tiny_budget)[-1], alone
    )


def test_full_fine_tuning_does_not_depend_on_its_batch_bitwise(data):
    target = full(lr=0.003)
    alone = train_cohort([target], data)[0]
    mates = [full(seed=s) for s in (0, 1, 2)]
    assert_bitwise(train_cohort([*mates, target], data)[-1], alone)
    assert_bitwise(train_cohort([*mates, target], data, memory_budget_mib=1e-6)[-1], alone)


def test_padded_ranks_match_the_single_run_path_and_padding_never_moves(data, monkeypatch):
    from lorasweep.training import batched_linear

    specs = [lora(rank=1), lora(rank=4, seed=1), lora(rank=2, init="randn")]
    finals = {}
    original = batched_linear.StackedLoRA.tensors

    def spy(self, slot):
        finals[slot] = (
            self.ranks[slot],
            self.params["A"][slot].clone(),
            self.params["Bt"][slot].clone(),
        )
        return original(self, slot)

    monkeypatch.setattr(batched_linear.StackedLoRA, "tensors", spy)
    results = train_cohort(specs, data, pad_ranks=True)
    for rank, a, bt in finals.values():
        assert a.shape[0] == bt.shape[0] == 4
        assert not a[rank:].any() and not bt[rank:].any(), "a padded row moved"
    for batched, spec in zip(results, specs, strict=True):
        single = train_run(spec, data)
        assert batched.tensors["lora_A"].shape == single.tensors["lora_A"].shape
        assert batched.train_state_bytes == single.train_state_bytes
        for mine, ref in zip(batched.epochs, single.epochs, strict=True):
            assert mine["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="do not share a cohort"):
        train_cohort(specs, data)


def test_waves_fit_the_memory_budget_and_keep_runs_of_one_order_together(data):
    dims = dataclasses.asdict(data.spec)
    specs = [lora(seed=s, lr=lr) for s in (0, 1, 2) for lr in (0.001, 0.002, 0.003, 0.004, 0.005)]
    specs += [lora(seed=7), lora(seed=8)]
    one = run_bytes(specs[0], dims)
    for runs_per_wave in (1, 2, 3, 5, 17):
        waves = cohort_waves(specs, dims, budget=runs_per_wave * one)
        assert sorted(r.run_id for c in waves for r in c) == sorted(r.run_id for r in specs)
        assert all(1 <= len(wave) <= runs_per_wave for wave in waves)
    waves = cohort_waves(specs, dims, budget=100 * one)
    assert sorted({run.seed for run in wave} for wave in waves) == [{0}, {1}, {2}, {7, 8}], (
        "groups of one order get their own wave; the small ones share one"
    )
    assert cohort_waves(specs[:1], dims, budget=1) == [specs[:1]], "a run larger than the budget"


def test_splitting_into_waves_changes_no_result_bitwise(data):
    specs = [lora(seed=s, lr=lr) for s in (0, 1) for lr in (0.001, 0.01, 0.03)]
    whole = train_cohort(specs, data)
    for budget_mib in (1e-6, 3 * run_bytes(specs[0], dataclasses.asdict(data.spec)) / 2**20):
        for a, b in zip(
            train_cohort(specs, data, memory_budget_mib=budget_mib), whole, strict=True
        ):
            assert_bitwise(a, b)


@pytest.mark.parametrize("mates", [1, 3], ids=["one other run", "three other runs"])
def test_a_diverging_run_stops_and_the_others_go_on(data, mates):
    exploding = lora(lr=1e6, alpha=1e6, init="randn", scaling="constant", epochs=6)
    others = [lora(epochs=6, seed=s) for s in range(mates)]
    results = train_cohort([others[0], exploding, *others[1:]], data)
    diverged = results[1]
    single = train_run(exploding, data)
    assert diverged.status == single.status == "diverged"
    assert diverged.diverged_epoch == single.diverged_epoch
    assert len(diverged.epochs) == len(single.epochs) == single.diverged_epoch + 1
    assert math.isnan(diverged.final["val_loss"]) and math.isnan(diverged.final["train_loss"])
    for result in (diverged, single):
        assert math.isnan(result.test_loss) and math.isnan(result.population_loss)
    for mine, ref in zip(diverged.epochs[:-1], single.epochs[:-1], strict=True):
        assert mine["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)
    assert diverged.train_state_bytes == single.train_state_bytes
    for result, spec in zip([results[0], *results[2:]], others, strict=True):
        assert result.status == "ok" and len(result.epochs) == 7
        assert_bitwise(result, train_cohort([spec], data)[0])


def test_a_run_that_diverges_at_its_first_step_counts_no_adam_state(data):
    exploding = lora(lr=1.0, alpha=math.inf, init="randn", scaling="constant", epochs=2)
    result = train_cohort([exploding, lora(epochs=2)], data)[0]
    single = train_run(exploding, data)
    assert result.status == single.status == "diverged" and result.diverged_epoch == 1
    assert result.train_state_bytes == single.train_state_bytes


def test_same_batch_twice_is_bitwise_the_same_and_leaves_global_rng_alone(data):
    state = torch.random.get_rng_state()
    specs = [lora(dropout=0.1), lora(dropout=0.1, seed=1, lr=0.02)]
    first, second = train_cohort(specs, data), train_cohort(specs, data)
    for a, b in zip(first, second, strict=True):
        assert_bitwise(a, b)
    assert torch.equal(torch.random.get_rng_state(), state)
