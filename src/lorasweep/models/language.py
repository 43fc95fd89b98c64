"""Base language models of the ``lm`` kind: Hugging Face Llama and GPT-2 at toy sizes.

Built from a config with seeded random weights (nothing is downloaded), so module names are
the ones PEFT users target: Llama's ``q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj,
down_proj`` and GPT-2's ``c_attn, c_proj, c_fc``. Weights are read and written in the paper
layout W (d_out×d_in) whatever the module stores (GPT-2's ``Conv1D`` keeps Wᵀ).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from lorasweep.seeding import generator
from lorasweep.tasks.language import HMM, optimal_nll, sample

ARCHITECTURES = ("llama", "gpt2")
TARGET_PRESETS = ("attention", "mlp", "all-linear")

_PRESET_MODULES = {
    "llama": {
        "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "mlp": ["gate_proj", "up_proj", "down_proj"],
    },
    # GPT-2's c_proj exists in both attention and MLP, so the presets name the block.
    "gpt2": {
        "attention": r".*\.attn\.(c_attn|c_proj)",
        "mlp": r".*\.mlp\.(c_fc|c_proj)",
    },
}


@dataclass(frozen=True)
class ModelSpec:
    """The architecture keys of an ``lm`` dataset."""

    architecture: str = "llama"
    vocab_size: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    seq_len: int = 64

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")


@dataclass(frozen=True)
class PretrainSpec:
    """The ``pretrain`` mapping: AdamW steps on fresh source text, warmup then cosine decay."""

    steps: int = 1500
    lr: float = 3e-3
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup: int = 50
    n_eval: int = 256
    """Held-out source sequences the curve is measured on."""


def build_model(spec: ModelSpec, seed: int) -> nn.Module:
    """The base model of ``spec`` with weights from the generator of (seed, "base-init").

    Initialisation follows each architecture's own scheme (N(0, 0.02²) for linear and
    embedding weights, GPT-2's residual projections c_proj at 0.02/√(2·n_layers), biases 0,
    norms 1) but draws from that generator; the model's own init, which uses the global RNG,
    runs inside ``fork_rng`` so the global stream is left as it was.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if spec.architecture == "llama":
        config = LlamaConfig(
            vocab_size=spec.vocab_size,
            hidden_size=spec.d_model,
            intermediate_size=spec.d_ff,
            num_hidden_layers=spec.n_layers,
            num_attention_heads=spec.n_heads,
            num_key_value_heads=spec.n_heads,
            max_position_embeddings=spec.seq_len,
            tie_word_embeddings=False,
        )
        cls = LlamaForCausalLM
    else:
        config = GPT2Config(
            vocab_size=spec.vocab_size,
            n_positions=spec.seq_len,
            n_embd=spec.d_model,
            n_layer=spec.n_layers,
            n_head=spec.n_heads,
            n_inner=spec.d_ff,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=None,
            eos_token_id=None,
        )
        cls = GPT2LMHeadModel
    with torch.random.fork_rng(devices=[]):
        model = cls(config)
    gen = generator(seed, "base-init")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=gen) * init_std(spec, name))
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.fill_(1.0)
    model.eval()
    return model


INIT_STD = 0.02
"""Both architectures' ``initializer_range``."""


def init_std(spec: ModelSpec, name: str) -> float:
    """The standard deviation a weight matrix ``name`` (a parameter or module name) starts at."""
    if spec.architecture == "gpt2" and name.removesuffix(".weight").endswith("c_proj"):
        return INIT_STD / math.sqrt(2 * spec.n_layers)
    return INIT_STD


def _is_linear(module: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, nn.Linear | Conv1D)


def _output_layer(model: nn.Module) -> str:
    """The name of the output projection, which PEFT's ``all-linear`` leaves out."""
    out = model.get_output_embeddings()
    return next(name for name, module in model.named_modules() if module is out)


def linear_modules(model: nn.Module) -> list[str]:
    """Every linear layer of the model but the output projection, in module order."""
    head = _output_layer(model)
    return [n for n, m in model.named_modules() if _is_linear(m) and n != head]


def peft_target_modules(architecture: str, targets: str) -> str | list[str]:
    """What a PEFT user passes as ``target_modules`` for ``targets``.

    ``attention``, ``mlp`` and ``all-linear`` are presets; anything else is a regular expression
    that PEFT matches against the whole module name (``re.fullmatch``).
    """
    if targets == "all-linear":
        return "all-linear"
    return _PRESET_MODULES[architecture].get(targets, targets)


def resolve_targets(model: nn.Module, architecture: str, targets: str) -> list[str]:
    """The module names ``targets`` selects on ``model``, as PEFT's ``target_modules`` would.

    A list selects each module whose name equals an entry or ends with ``.`` + entry; a string
    must match the whole name. A selected module that is not linear is an error, as in PEFT.
    """
    chosen = peft_target_modules(architecture, targets)
    if chosen == "all-linear":
        return linear_modules(model)
    names = []
    for name, module in model.named_modules():
        if isinstance(chosen, str):
            hit = re.fullmatch(chosen, name) is not None
        else:
            hit = any(name == key or name.endswith("." + key) for key in chosen)
        if hit:
            if not _is_linear(module):
                raise ValueError(f"targets {targets!r} selects {name}, which is not linear")
            names.append(name)
    if not names:
        raise ValueError(f"targets {targets!r} selects no module of this {architecture} model")
    return names


def _stores_transposed(module: nn.Module) -> bool:
    return not isinstance(module, nn.Linear)


def get_weight(model: nn.Module, name: str) -> torch.Tensor:
    """The weight of module ``name`` in the paper layout W (d_out×d_in), a detached copy."""
    module = model.get_submodule(name)
    weight = module.weight.detach()
    return (weight.T if _stores_transposed(module) else weight).clone()


def add_to_weight(model: nn.Module, name: str, delta: torch.Tensor) -> None:
    """W ← W + delta for module ``name``, ``delta`` in the paper layout (d_out×d_in)."""
    module = model.get_submodule(name)
    delta = delta.to(module.weight.dtype)
    with torch.no_grad():
        module.weight.add_(delta.T if _stores_transposed(module) else delta)


def logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The model's next-token logits (n×seq_len×V) for a batch of token sequences."""
    return model(input_ids=tokens, use_cache=False).logits


def nll_per_sequence(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL (nats) of each sequence over positions 2…seq_len, with gradients."""
    out = logits(model, tokens)[:, :-1]
    nll = nn.functional.cross_entropy(
        out.reshape(-1, out.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none"
    )
    return nll.view(tokens.shape[0], -1).mean(dim=1)


@dataclass
class Pretrained:
    """A pretrained base: its weights, training curve and source-language floor."""

    state: dict[str, torch.Tensor]
    curve: list[dict] = field(default_factory=list)
    """Rows ``step, train_nll, eval_nll`` at log-spaced steps (step 0 is the random init)."""
    floor: float = math.nan
    """Bayes-optimal NLL of the eval sequences (the forward algorithm's), nats per token."""
    seconds: float = 0.0


def log_spaced_steps(steps: int, per_decade: int = 8) -> list[int]:
    """0, 1 and about ``per_decade`` distinct integer steps per decade up to ``steps``."""
    points = {0, steps}
    n = max(1, int(math.ceil(per_decade * math.log10(max(steps, 1)))))
    points.update(int(round(10 ** (i * math.log10(steps) / n))) for i in range(n + 1))
    return sorted(p for p in points if 0 <= p <= steps)


def pretrain(model: nn.Module, hmm: HMM, seq_len: int, spec: PretrainSpec, seed: int) -> Pretrained:
    """Train ``model`` in place on fresh text of ``hmm`` with AdamW; returns weights and curve.

    Batches are drawn from the generator of (seed, "pretrain-batches"), the eval set from
    (seed, "pretrain-eval"); the learning rate warms up linearly for ``spec.warmup`` steps,
    then follows a cosine to 10 % of ``spec.lr``.
    """
    batches = generator(seed, "pretrain-batches")
    held_out = sample(hmm, spec.n_eval, seq_len, generator(seed, "pretrain-eval"))
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)

    def rate(step: int) -> float:
        if step < spec.warmup:
            return (step + 1) / spec.warmup
        progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, rate)
    record = set(log_spaced_steps(spec.steps))
    result = Pretrained(state={}, floor=optimal_nll(hmm, held_out))
    start = time.perf_counter()
    train_nll = math.nan
    for step in range(spec.steps + 1):
        if step in record:
            result.curve.append(
                {"step": step, "train_nll": train_nll, "eval_nll": mean_nll(model, held_out)}
            )
        if step == spec.steps:
            break
        model.train()
        loss = nll_per_sequence(model, sample(hmm, spec.batch_size, seq_len, batches)).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        train_nll = float(loss.detach())
    model.eval()
    result.seconds = time.perf_counter() - start
    result.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return result


@torch.no_grad()
def mean_nll(model: nn.Module, tokens: torch.Tensor, batch_size: int = 256) -> float:
    """Next-token NLL per predicted token (nats) of ``tokens`` under ``model``, in eval mode."""
    was_training = model.training
    model.eval()
    total = 0.0
    for chunk in tokens.split(batch_size):
        total += float(nll_per_sequence(model, chunk).double().sum())
    model.train(was_training)
    return total / tokens.shape[0]


def marchenko_pastur_edge(d_out: int, d_in: int, entry_std: float) -> float:
    """σ_max of a d_out×d_in matrix of i.i.d. N(0, entry_std²) entries: entry_std·(√d_out + √d_in).

    The edge of the Marchenko–Pastur law (Marchenko & Pastur 1967; the largest singular value
    converges to it, Geman 1980).
    """
    return entry_std * (math.sqrt(d_out) + math.sqrt(d_in))


def spectrum_summary(
    model: nn.Module, spec: ModelSpec, top: int = 4
) -> list[dict[str, float | str | list[float]]]:
    """Per linear module: top singular values, the random init's MP edge and the spikes above it.

    ``edge_init`` is the edge of the module's random init (:func:`init_std`); ``edge_same_norm``
    that of an i.i.d. matrix with the trained weight's own Frobenius norm, so ``spikes`` counts
    singular values that a mere growth of the weight's scale cannot explain.
    """
    rows = []
    for name in linear_modules(model):
        w = get_weight(model, name).double()
        d_out, d_in = w.shape
        sv = torch.linalg.svdvals(w)
        same = float(w.norm()) / math.sqrt(d_out * d_in)
        edge_same = marchenko_pastur_edge(d_out, d_in, same)
        rows.append(
            {
                "module": name,
                "top": [float(s) for s in sv[:top]],
                "edge_init": marchenko_pastur_edge(d_out, d_in, init_std(spec, name)),
                "edge_same_norm": edge_same,
                "spikes": int((sv > edge_same).sum()),
            }
        )
    return rows


def spectrum_rows(model: nn.Module, spec: ModelSpec) -> list[dict[str, float | int | str]]:
    """Every singular value of every linear module, one row each (``module, index, value,
    edge_init, edge_same_norm``, index from 1): the table a base's spectrum is stored as."""
    rows = []
    for name in linear_modules(model):
        w = get_weight(model, name).double()
        d_out, d_in = w.shape
        edge_init = marchenko_pastur_edge(d_out, d_in, init_std(spec, name))
        edge_same = marchenko_pastur_edge(d_out, d_in, float(w.norm()) / math.sqrt(d_out * d_in))
        for i, value in enumerate(torch.linalg.svdvals(w).tolist(), start=1):
            rows.append(
                {
                    "module": name,
                    "index": i,
                    "value": value,
                    "edge_init": edge_init,
                    "edge_same_norm": edge_same,
                }
            )
    return rows


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load ``state`` into ``model`` (strict) and return it in eval mode."""
    model.load_state_dict(dict(state), strict=True)
    return model.eval()
