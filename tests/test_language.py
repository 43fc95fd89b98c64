"""The ``lm`` task: source language, Hugging Face bases, teacher shift, losses, targets."""

from __future__ import annotations

import math
import re

import pytest
import torch

from lorasweep.models.language import (
    ModelSpec,
    PretrainSpec,
    build_model,
    get_weight,
    linear_modules,
    log_spaced_steps,
    logits,
    marchenko_pastur_edge,
    mean_nll,
    peft_target_modules,
    pretrain,
    resolve_targets,
    spectrum_rows,
    spectrum_summary,
)
from lorasweep.tasks.language import (
    LanguageSpec,
    build_language,
    conditional_log_probs,
    entropy_rate_bounds,
    optimal_nll,
    sample,
    unigram_entropy,
)
from lorasweep.tasks.lm import (
    LMTaskSpec,
    build_task,
    first_token_law,
    forgetting,
    kl_estimate,
    make_teacher,
    sample_from_model,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCHS = ("llama", "gpt2")
TINY = dict(vocab_size=32, d_model=32, n_layers=2, n_heads=2, d_ff=64, seq_len=16)


def tiny_spec(arch: str, **task) -> LMTaskSpec:
    entry = dict(TINY, architecture=arch, n_train=32, n_val=64, n_test=32, seed=5)
    return LMTaskSpec.from_config({**entry, **task})


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_language_is_a_valid_hmm_with_an_informative_context():
    hmm = build_language(LanguageSpec(vocab_size=32, n_states=8, seed=1))
    assert torch.allclose(hmm.transition.sum(1), torch.ones(8, dtype=torch.float64))
    assert torch.allclose(hmm.emission.sum(1), torch.ones(8, dtype=torch.float64))
    assert torch.allclose(hmm.initial @ hmm.transition, hmm.initial, atol=1e-12)
    assert (hmm.emission > 0).sum(1).tolist() == [8] * 8
    tokens = sample(hmm, 512, 32, gen(0))
    floor = optimal_nll(hmm, tokens)
    assert floor < unigram_entropy(hmm) - 0.2 < math.log(32)
    lower, upper = entropy_rate_bounds(hmm, context=8, n=2048)
    assert lower <= upper + 1e-12
    assert abs(floor - upper) < 0.15


def test_forward_algorithm_matches_brute_force_enumeration():
    hmm = build_language(LanguageSpec(vocab_size=5, n_states=3, branching=2, emission_support=3))
    tokens = torch.tensor([[0, 4, 2], [1, 1, 3]])
    s = hmm.transition.shape[0]
    for row, seq in enumerate(tokens.tolist()):
        total = 0.0
        for a in range(s):
            for b in range(s):
                for c in range(s):
                    total += float(
                        hmm.initial[a]
                        * hmm.emission[a, seq[0]]
                        * hmm.transition[a, b]
                        * hmm.emission[b, seq[1]]
                        * hmm.transition[b, c]
                        * hmm.emission[c, seq[2]]
                    )
        got = float(conditional_log_probs(hmm, tokens)[row].sum())
        assert got == pytest.approx(math.log(total), abs=1e-12)


def test_sampling_is_reproducible_from_its_seed():
    hmm = build_language(LanguageSpec(vocab_size=32, seed=2))
    assert torch.equal(sample(hmm, 8, 20, gen(3)), sample(hmm, 8, 20, gen(3)))
    assert not torch.equal(sample(hmm, 8, 20, gen(3)), sample(hmm, 8, 20, gen(4)))
    model = build_model(ModelSpec(**TINY), seed=0)
    first = first_token_law(hmm)
    a = sample_from_model(model, first, 6, 16, gen(7), batch_size=4)
    b = sample_from_model(model, first, 6, 16, gen(7), batch_size=4)
    assert a.shape == (6, 16) and torch.equal(a, b)
    assert not torch.equal(a, sample_from_model(model, first, 6, 16, gen(8)))


@pytest.mark.parametrize("arch", ARCHS)
def test_base_init_is_seeded_and_leaves_the_global_rng_alone(arch):
    state = torch.random.get_rng_state()
    a = build_model(ModelSpec(architecture=arch, **TINY), seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = build_model(ModelSpec(architecture=arch, **TINY), seed=1)
    c = build_model(ModelSpec(architecture=arch, **TINY), seed=2)
    for (name, pa), pb, pc in zip(
        a.named_parameters(), b.parameters(), c.parameters(), strict=True
    ):
        assert torch.equal(pa, pb), name
        if pa.ndim == 2:
            assert not torch.equal(pa, pc), name


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shifted", ["mlp", "attention", "all-linear"])
def test_teacher_is_the_base_plus_exactly_the_declared_shifts(arch, shifted):
    spec = tiny_spec(arch, shifted=shifted, task_rank=2, task_scale=0.5, spectrum_decay=0.5)
    base = build_model(spec.model, spec.seed)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    teacher, shifts = make_teacher(base, spec)
    assert sorted(shifts) == sorted(resolve_targets(base, arch, shifted))
    for name, delta in shifts.items():
        sv = torch.linalg.svdvals(delta)
        top = float(torch.linalg.matrix_norm(get_weight(base, name).double(), ord=2))
        assert sv[:2].tolist() == pytest.approx([0.5 * top, 0.25 * top], rel=1e-9)
        assert float(sv[2:].max()) < 1e-12 * top
        moved = get_weight(teacher, name).double() - get_weight(base, name).double()
        assert torch.allclose(moved, delta, atol=1e-6)
    shifted_params = {f"{name}.weight" for name in shifts}
    for key, value in teacher.state_dict().items():
        assert torch.equal(base.state_dict()[key], before[key]), f"base changed: {key}"
        if key not in shifted_params:
            assert torch.equal(value, before[key]), f"not declared, yet changed: {key}"


def test_kl_estimate_is_zero_for_the_teacher_and_unbiased_for_a_student():
    spec = tiny_spec("llama", shifted="all-linear", task_scale=10.0, n_val=256)
    task = build_task(spec, build_model(spec.model, spec.seed).state_dict())
    teacher, base, tokens = task.model("teacher"), task.model("base"), task.splits["val"]
    assert kl_estimate(teacher, teacher, tokens) == 0.0
    with torch.no_grad():
        log_t = torch.log_softmax(logits(teacher, tokens)[:, :-1].double(), -1)
        log_s = torch.log_softmax(logits(base, tokens)[:, :-1].double(), -1)
    exact = (log_t.exp() * (log_t - log_s)).sum(-1)
    assert float(exact.min()) >= -1e-12
    nxt = tokens[:, 1:, None]
    per_token = (log_t.gather(-1, nxt) - log_s.gather(-1, nxt)).squeeze(-1).mean(1)
    se = float(per_token.std()) / math.sqrt(per_token.numel())
    estimate = kl_estimate(base, teacher, tokens)
    assert estimate == pytest.approx(float(per_token.mean()), abs=1e-6)
    assert abs(estimate - float(exact.mean())) < 4 * se
    assert float(exact.mean()) > 4 * se


def test_task_is_reproducible_and_forgetting_is_zero_for_an_untrained_run():
    spec = tiny_spec("gpt2")
    state = build_model(spec.model, spec.seed).state_dict()
    a, b = build_task(spec, state), build_task(spec, state)
    assert a.floors == b.floors
    for split in ("train", "val", "test", "source"):
        assert torch.equal(a.splits[split], b.splits[split])
    assert [a.splits[s].shape[0] for s in ("train", "val", "test")] == [32, 64, 32]
    assert forgetting(a.model("base"), a.model("base"), a.splits["source"]) == 0.0
    assert a.floors["base_source_loss"] == mean_nll(a.model("base"), a.splits["source"])
    assert a.floors["source_floor"] < a.floors["base_source_loss"]


def test_config_keys_and_bad_input():
    spec = LMTaskSpec.from_config(
        dict(TINY, architecture="gpt2", pretrain={"steps": 7}, language={"n_states": 4}, seed=9)
    )
    assert spec.model.architecture == "gpt2" and spec.pretrain.steps == 7
    assert spec.language.n_states == 4 and spec.language.vocab_size == 32
    assert spec.language.seed == 9 and spec.seed == 9
    with pytest.raises(ValueError, match="architecture must be one of llama, gpt2"):
        ModelSpec(architecture="bert")
    with pytest.raises(ValueError, match="selects no module"):
        resolve_targets(build_model(ModelSpec(**TINY), 0), "llama", "c_attn")


def test_log_spaced_steps_and_marchenko_pastur_edge():
    steps = log_spaced_steps(1000)
    assert steps[:3] == [0, 1, 2] and steps[-1] == 1000 and len(steps) == len(set(steps))
    assert 20 < len(steps) < 40
    w = torch.randn(400, 200, generator=gen(0)) * 0.02
    edge = marchenko_pastur_edge(400, 200, 0.02)
    assert float(torch.linalg.svdvals(w)[0]) == pytest.approx(edge, rel=0.05)


def _peft_wrapped(model, target_modules) -> list[str]:
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=target_modules))
    prefix = "base_model.model."
    return [
        name[len(prefix) :]
        for name, module in peft_model.named_modules()
        if isinstance(module, LoraLayer)
    ]


REGEXES = {"llama": r"model\.layers\.1\..*(q|v)_proj", "gpt2": r"transformer\.h\.0\..*c_proj"}


@pytest.mark.peft
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("targets", ["attention", "mlp", "all-linear", "regex"])
def test_targets_match_what_peft_wraps(arch, targets):
    targets = REGEXES[arch] if targets == "regex" else targets
    model = build_model(ModelSpec(architecture=arch, **TINY), 0)
    ours = resolve_targets(model, arch, targets)
    linear = linear_modules(model)
    assert ours == _peft_wrapped(model, peft_target_modules(arch, targets))
    if targets == "all-linear":
        assert ours == linear and not any("head" in n for n in ours)
    if targets.startswith(("model", "transformer")):
        assert all(re.fullmatch(targets, n) for n in ours) and len(ours) == 2


@pytest.mark.peft
@pytest.mark.parametrize("arch", ARCHS)
def test_zero_b_lora_leaves_the_base_unchanged(arch):
    from peft import LoraConfig, get_peft_model

    model = build_model(ModelSpec(architecture=arch, **TINY), 0)
    tokens = sample(build_language(LanguageSpec(vocab_size=32)), 4, 16, gen(1))
    before = logits(model, tokens).detach()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    after = peft_model(input_ids=tokens, use_cache=False).logits.detach()
    assert torch.equal(before, after)


@pytest.mark.slow
def test_pretraining_lowers_the_source_nll_towards_the_floor():
    spec = tiny_spec("llama")
    hmm = build_language(spec.language)
    model = build_model(spec.model, spec.seed)
    result = pretrain(model, hmm, 16, PretrainSpec(steps=150, batch_size=16, warmup=10), 0)
    start, end = result.curve[0]["eval_nll"], result.curve[-1]["eval_nll"]
    assert start == pytest.approx(math.log(32), abs=0.05)
    assert end - result.floor < 0.5 * (start - result.floor)
    assert end < unigram_entropy(hmm)
    assert [row["step"] for row in result.curve] == log_spaced_steps(150)
    assert torch.equal(model.state_dict()["lm_head.weight"], result.state["lm_head.weight"])
    summary = spectrum_summary(model, spec.model)
    assert sum(row["spikes"] for row in summary) > 0
    rows = spectrum_rows(model, spec.model)
    assert len(rows) == sum(min(get_weight(model, r["module"]).shape) for r in summary)
    first = [r for r in rows if r["module"] == summary[0]["module"]]
    assert [r["value"] for r in first[:4]] == pytest.approx(summary[0]["top"])
    assert first[0]["edge_same_norm"] == summary[0]["edge_same_norm"]


def test_a_random_init_has_no_spikes_above_its_marchenko_pastur_edge():
    spec = ModelSpec(
        architecture="gpt2", vocab_size=64, d_model=64, n_layers=2, n_heads=2, d_ff=128
    )
    for row in spectrum_summary(build_model(spec, 3), spec):
        assert row["top"][0] == pytest.approx(row["edge_init"], rel=0.12), row["module"]
