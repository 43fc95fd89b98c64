"""The source language of the ``lm`` kind: a seeded hidden Markov model over a token vocabulary.

Why an HMM (and not a grammar or a mixture of n-grams):

- **Structure a model must learn.** The best next-token distribution given a prefix is
  p(x_{t+1} | x_{≤t}) = b_tᵀ·T·E, with b_t the belief over the ``n_states`` hidden states (the
  forward filter). Every prediction is a point of an ``n_states``-dimensional simplex mapped
  linearly to the vocabulary, so a transformer that predicts well carries a low-dimensional belief
  state in its residual stream (Shai et al. 2024, "Transformers represent belief state geometry in
  their residual stream") and its weights get a few directions far above a random matrix's
  Marchenko–Pastur bulk: the structured spectrum PiSSA and the intruder count need.
- **An exact floor on the same tokens.** The forward algorithm gives log p(x_t | x_{<t}) exactly
  for every token of every sequence, so the Bayes-optimal NLL of any set of tokens is computed,
  not estimated. (The entropy rate of a hidden Markov process has no closed form, Blackwell 1957;
  the per-position conditional entropy falls towards it from above, Cover & Thomas Thm 4.5.1.)
  A mixture of n-grams has a closed-form rate but a trivial belief state (one component label);
  a grammar's exact prefix probabilities need an Earley/inside pass per token.

The chain: initial state ~ the stationary law π of T; T's rows are softmax(``sharpness``·g) of
Gaussian logits g restricted to ``branching`` successors per state (sparse, so the hidden path is
informative), emissions E the same over ``emission_support`` tokens per state with overlapping
supports (so a token does not reveal its state). All parameters come from one seeded generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lorasweep.seeding import generator


@dataclass(frozen=True)
class LanguageSpec:
    """The source language's keys: vocabulary, hidden states and how peaked its laws are."""

    vocab_size: int = 64
    n_states: int = 16
    branching: int = 3
    """Successor states per hidden state (nonzero entries of each row of T)."""
    emission_support: int = 8
    """Tokens each state can emit (nonzero entries of each row of E)."""
    sharpness: float = 1.0
    """Scale of the Gaussian logits of T and E; larger is more peaked (lower entropy)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.branching <= self.n_states:
            raise ValueError(f"branching must be in 1..n_states={self.n_states}")
        if not 1 <= self.emission_support <= self.vocab_size:
            raise ValueError(f"emission_support must be in 1..vocab_size={self.vocab_size}")


@dataclass(frozen=True)
class HMM:
    """A hidden Markov model: transition T (S×S), emission E (S×V), initial law π (S), float64."""

    transition: torch.Tensor
    emission: torch.Tensor
    initial: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return self.emission.shape[1]


def _sparse_rows(rows: int, cols: int, support: int, sharpness: float, gen) -> torch.Tensor:
    """Row-stochastic matrix: each row softmax(sharpness·g) over ``support`` random columns."""
    logits = sharpness * torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    keep = torch.rand(rows, cols, generator=gen, dtype=torch.float64).argsort(dim=1)[:, :support]
    mask = torch.full((rows, cols), -math.inf, dtype=torch.float64)
    mask.scatter_(1, keep, 0.0)
    return torch.softmax(logits + mask, dim=1)


def stationary(transition: torch.Tensor) -> torch.Tensor:
    """π with πᵀT = πᵀ: the left eigenvector of eigenvalue 1, by power iteration of a lazy chain."""
    lazy = 0.5 * (transition + torch.eye(transition.shape[0], dtype=transition.dtype))
    pi = torch.full((transition.shape[0],), 1.0 / transition.shape[0], dtype=transition.dtype)
    for _ in range(10_000):
        nxt = pi @ lazy
        if torch.max(torch.abs(nxt - pi)) < 1e-15:
            break
        pi = nxt
    return nxt / nxt.sum()


def build_language(spec: LanguageSpec) -> HMM:
    """The HMM of ``spec``, drawn from the generator of (seed, "language")."""
    gen = generator(spec.seed, "language")
    n_states = spec.n_states
    transition = _sparse_rows(n_states, n_states, spec.branching, spec.sharpness, gen)
    # A cycle through all states keeps the chain irreducible, so π is unique and positive.
    cycle = torch.roll(torch.eye(n_states, dtype=torch.float64), 1, dims=1)
    transition = 0.9 * transition + 0.1 * cycle
    emission = _sparse_rows(n_states, spec.vocab_size, spec.emission_support, spec.sharpness, gen)
    return HMM(transition, emission, stationary(transition))


def sample(hmm: HMM, n: int, seq_len: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` token sequences of length ``seq_len`` (int64, n×seq_len), all draws from ``gen``."""
    tokens = torch.empty(n, seq_len, dtype=torch.long)
    state = torch.multinomial(hmm.initial.expand(n, -1), 1, generator=gen).squeeze(1)
    for t in range(seq_len):
        tokens[:, t] = torch.multinomial(hmm.emission[state], 1, generator=gen).squeeze(1)
        if t + 1 < seq_len:
            state = torch.multinomial(hmm.transition[state], 1, generator=gen).squeeze(1)
    return tokens


def conditional_log_probs(
    hmm: HMM, tokens: torch.Tensor, prior: torch.Tensor | None = None
) -> torch.Tensor:
    """log p(x_t | x_{<t}) for every token (n×seq_len, float64), by the forward algorithm.

    ``prior`` (n×S) replaces π as the law of the first hidden state, one row per sequence.
    """
    n, seq_len = tokens.shape
    out = torch.empty(n, seq_len, dtype=torch.float64)
    prior = hmm.initial.expand(n, -1) if prior is None else prior
    for t in range(seq_len):
        joint = prior * hmm.emission[:, tokens[:, t]].T
        evidence = joint.sum(dim=1)
        out[:, t] = torch.log(evidence)
        prior = (joint / evidence[:, None]) @ hmm.transition
    return out


def optimal_nll(hmm: HMM, tokens: torch.Tensor) -> float:
    """The Bayes-optimal NLL per predicted token (nats) of ``tokens``: the floor of any model.

    Averaged over positions 2…seq_len, the tokens a causal LM predicts from its context (the
    first token has no context).
    """
    return float(-conditional_log_probs(hmm, tokens)[:, 1:].mean())


def unigram_entropy(hmm: HMM) -> float:
    """H(x_t) under the stationary law (nats): the NLL of the best context-free model."""
    p = hmm.initial @ hmm.emission
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def entropy_rate_bounds(
    hmm: HMM, context: int, n: int = 4096, seed: int = 0
) -> tuple[float, float]:
    """Monte Carlo bounds on the entropy rate H (nats/token) from ``n`` sequences.

    H(x_t | x_{<t}, s_1) ≤ H ≤ H(x_t | x_{<t}) at t = ``context`` + 1 (Cover & Thomas Thm
    4.5.1): the upper bound is the forward filter's expected log-loss at that position, the
    lower the same filter started from the known first state.
    """
    gen = generator(seed, "entropy-rate")
    tokens = torch.empty(n, context + 1, dtype=torch.long)
    state = torch.multinomial(hmm.initial.expand(n, -1), 1, generator=gen).squeeze(1)
    first = state.clone()
    for t in range(context + 1):
        tokens[:, t] = torch.multinomial(hmm.emission[state], 1, generator=gen).squeeze(1)
        state = torch.multinomial(hmm.transition[state], 1, generator=gen).squeeze(1)
    upper = float(-conditional_log_probs(hmm, tokens)[:, -1].mean())
    known = torch.nn.functional.one_hot(first, hmm.transition.shape[0]).double()
    lower = float(-conditional_log_probs(hmm, tokens, known)[:, -1].mean())
    return lower, upper
