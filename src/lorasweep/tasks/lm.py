"""The ``lm`` fine-tuning task: a pretrained base, a teacher with a known low-rank shift, and
sequences sampled from the teacher.

- The base f₀ is a Llama or GPT-2 model pretrained on the source language
  (:mod:`lorasweep.tasks.language`, :func:`lorasweep.models.language.pretrain`).
- The teacher f* is f₀ with W ← W + ΔW in every module ``shifted`` selects, where
  ΔW = σ₁(W₀)·U diag(s) Vᵀ, s_i = ``task_scale``·``spectrum_decay``^(i−1) for i = 1…``task_rank``,
  U (d_out×r) and V (d_in×r) orthonormal and drawn per module, σ₁(W₀) the base weight's largest
  singular value. So ``task_scale`` = 1 makes the shift's top direction as strong as the
  weight's own top direction, whatever the module's size or how far pretraining grew it.
- Train, validation and test splits are sequences sampled autoregressively from f* (the first
  token from the source language's stationary unigram law); the source split is held-out text
  of the source language.

Losses are next-token NLL per predicted token in nats. On teacher samples,
E[NLL(student) − NLL(teacher)] = KL(f* ‖ student) per token (averaged over the teacher's own
contexts), so the teacher's NLL on the same tokens is the floor (``optimal_val_loss``) and the
excess over it is an unbiased KL estimate; forgetting is the rise of NLL on the source split.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from lorasweep.models.language import (
    ModelSpec,
    PretrainSpec,
    add_to_weight,
    build_model,
    get_weight,
    load_state,
    mean_nll,
    resolve_targets,
)
from lorasweep.seeding import generator
from lorasweep.tasks.language import HMM, LanguageSpec, build_language, optimal_nll, sample
from lorasweep.tasks.synthetic import orthonormal


@dataclass(frozen=True)
class LMTaskSpec:
    """The keys of one ``lm`` dataset (see the module docstring for what each one does)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    language: LanguageSpec = field(default_factory=LanguageSpec)
    shifted: str = "mlp"
    task_rank: int = 2
    task_scale: float = 1.0
    spectrum_decay: float = 1.0
    n_train: int = 512
    n_val: int = 128
    n_test: int = 128
    seed: int = 0

    @classmethod
    def from_config(cls, entry: Mapping) -> LMTaskSpec:
        """From a flat config entry: the architecture keys, ``pretrain`` and ``language`` mappings
        and the task keys; ``vocab_size`` and ``seed`` are shared with the source language."""
        model_keys = {f.name for f in fields(ModelSpec)}
        model = ModelSpec(**{k: entry[k] for k in model_keys if k in entry})
        language = LanguageSpec(
            **{**dict(entry.get("language", {})), "vocab_size": model.vocab_size},
            seed=int(entry.get("seed", 0)),
        )
        task_keys = {f.name for f in fields(cls)} - {"model", "pretrain", "language"}
        return cls(
            model=model,
            pretrain=PretrainSpec(**dict(entry.get("pretrain", {}))),
            language=language,
            **{k: entry[k] for k in task_keys if k in entry},
        )

    def as_dict(self) -> dict:
        return asdict(self)

    def singular_values(self) -> list[float]:
        """s_i = task_scale · spectrum_decay^(i−1), i = 1…task_rank, relative to σ₁(W₀)."""
        return [self.task_scale * self.spectrum_decay**i for i in range(self.task_rank)]


def shift_for(w0: torch.Tensor, spec: LMTaskSpec, name: str) -> torch.Tensor:
    """ΔW = σ₁(W₀)·U diag(s) Vᵀ for module ``name`` (float64, the paper layout d_out×d_in).

    U and V come from the generator of (seed, "lm-shift", name), so a module's shift does not
    depend on which other modules are shifted.
    """
    gen = generator(spec.seed, "lm-shift", name)
    d_out, d_in = w0.shape
    u = orthonormal(d_out, spec.task_rank, gen)
    v = orthonormal(d_in, spec.task_rank, gen)
    top = float(torch.linalg.matrix_norm(w0.double(), ord=2))
    s = torch.tensor(spec.singular_values(), dtype=torch.float64)
    return top * (u * s) @ v.T


def make_teacher(base: nn.Module, spec: LMTaskSpec) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of ``base`` with the shift added to each module ``spec.shifted`` selects.

    Returns the teacher and its shifts {module name: ΔW}; ``base`` is left unchanged.
    """
    teacher = copy.deepcopy(base).eval()
    shifts = {}
    for name in resolve_targets(teacher, spec.model.architecture, spec.shifted):
        shifts[name] = shift_for(get_weight(base, name), spec, name)
        add_to_weight(teacher, name, shifts[name])
    return teacher, shifts


def first_token_law(hmm: HMM) -> torch.Tensor:
    """p(x₁) = πᵀE: the source language's law of a sequence's first token."""
    return hmm.initial @ hmm.emission


@torch.no_grad()
def sample_from_model(
    model: nn.Module,
    first: torch.Tensor,
    n: int,
    seq_len: int,
    gen: torch.Generator,
    batch_size: int = 256,
) -> torch.Tensor:
    """``n`` sequences drawn autoregressively from ``model`` at temperature 1 (n×seq_len).

    The first token is drawn from the law ``first``; every draw comes from ``gen``, in order.
    Uses the model's key–value cache, so each position costs one token's forward pass.
    """
    model.eval()
    out = []
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        tokens = torch.multinomial(first.float().expand(rows, -1), 1, generator=gen)
        cache = None
        step_input = tokens
        for _ in range(seq_len - 1):
            result = model(input_ids=step_input, cache=cache, use_cache=True)
            cache = result.cache
            probs = torch.softmax(result.logits[:, -1].double(), dim=-1)
            step_input = torch.multinomial(probs, 1, generator=gen)
            tokens = torch.cat([tokens, step_input], dim=1)
        out.append(tokens)
    return torch.cat(out)


@dataclass
class LMTask:
    """A built ``lm`` task: the models' weights, the token splits and their floors."""

    spec: LMTaskSpec
    base_state: dict[str, torch.Tensor]
    teacher_state: dict[str, torch.Tensor]
    shifts: dict[str, torch.Tensor]
    splits: dict[str, torch.Tensor]
    """``train``, ``val``, ``test`` (teacher samples) and ``source`` (source-language text)."""
    floors: dict[str, float]
    """``optimal_val_loss``, ``optimal_test_loss`` (the teacher's NLL on those splits),
    ``base_val_loss`` (epoch 0), ``base_source_loss`` and ``source_floor`` (the source
    language's Bayes-optimal NLL on the source split)."""

    def model(self, which: str = "base") -> nn.Module:
        """A fresh base (``base``) or teacher (``teacher``) model with this task's weights."""
        state = self.base_state if which == "base" else self.teacher_state
        return load_state(build_model(self.spec.model, self.spec.seed), state)


def build_task(spec: LMTaskSpec, base_state: Mapping[str, torch.Tensor]) -> LMTask:
    """The task of ``spec`` on the pretrained base ``base_state``: teacher, samples, floors.

    Each split is drawn from its own generator, (seed, "lm-sample", split); the source split
    (``n_val`` sequences) from (seed, "lm-source").
    """
    hmm = build_language(spec.language)
    base = load_state(build_model(spec.model, spec.seed), base_state)
    teacher, shifts = make_teacher(base, spec)
    first = first_token_law(hmm)
    seq_len = spec.model.seq_len
    splits = {
        split: sample_from_model(
            teacher, first, n, seq_len, generator(spec.seed, "lm-sample", split)
        )
        for split, n in (("train", spec.n_train), ("val", spec.n_val), ("test", spec.n_test))
    }
    splits["source"] = sample(hmm, spec.n_val, seq_len, generator(spec.seed, "lm-source"))
    floors = {
        "optimal_val_loss": mean_nll(teacher, splits["val"]),
        "optimal_test_loss": mean_nll(teacher, splits["test"]),
        "base_val_loss": mean_nll(base, splits["val"]),
        "base_source_loss": mean_nll(base, splits["source"]),
        "source_floor": optimal_nll(hmm, splits["source"]),
    }
    teacher_state = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    return LMTask(spec, dict(base_state), teacher_state, shifts, splits, floors)


def kl_estimate(student: nn.Module, teacher: nn.Module, tokens: torch.Tensor) -> float:
    """NLL(student) − NLL(teacher) on teacher samples ``tokens``: an unbiased estimate of the
    per-token KL(teacher ‖ student) over the teacher's contexts (nats)."""
    return mean_nll(student, tokens) - mean_nll(teacher, tokens)


def forgetting(model: nn.Module, base: nn.Module, source: torch.Tensor) -> float:
    """Rise of next-token NLL on the source split from ``base`` to ``model`` (nats/token)."""
    return mean_nll(model, source) - mean_nll(base, source)
