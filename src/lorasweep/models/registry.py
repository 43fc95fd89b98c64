"""The registered fine-tuning methods, adapter inits and scaling rules, one record each.

Importable without torch: planning, tables, figures and the report read these records, and the
config schema's enums are held equal to them (``tests/test_registry.py``). Every other module
asks a record (``method(run.method).adapter``, ``init(run.init).replaces_base``) rather than
comparing a name, so a new method, init or rule is one entry here plus the code that computes
it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """A fine-tuning method: what it trains and how PEFT names it."""

    name: str
    label: str
    """How figures and the report name it."""
    adapter: bool
    """Trains a rank-r adapter (A, B) beside a frozen base; False for full fine-tuning, which
    trains every weight and bias."""
    magnitude: bool = False
    """Also trains a per-output-row magnitude m (DoRA, Liu et al. 2024, arXiv 2402.09353)."""
    peft_use_dora: bool = False
    """PEFT's ``LoraConfig(use_dora=...)``."""
    fused: bool = True
    """The hand-fused single-layer objective (``training/batched_linear.py``) computes it;
    otherwise a single layer trains through the generic ``functional_call`` objective as a
    network of one module."""
    merged_weight_cost: float = 0
    """Cost, in multiply-add equivalents, of each element of an adapted module's d_out×d_in
    weight per step and run, beyond the product BA: DoRA's s·BA, W₀ + s·BA and its row norms
    (:func:`lorasweep.models.dora.row_norms`), elementwise passes over memory that each take
    about as long as a hundred multiply-adds of the batched products (calibrated on DoRA steps
    of 256² to 1024² layers, rank 4 and 32, one CPU core); the cost model reads it."""
    merged_weight_copies: int = 0
    """d_out×d_in temporaries of each adapted module that one run holds at once while its
    forward forms them (DoRA: s·BA and W₀ + s·BA); the memory model reads it."""
    output_copies: int = 0
    """Values per output of each adapted module, per token, that the forward forms beyond the
    module's output and keeps for the backward pass (DoRA: the base output W₀x, the adapter's
    output and the two scaled terms m/‖·‖ multiplies)."""
    peft_config: str | None = None
    """The PEFT config class that builds it when it trains through real PEFT
    (:mod:`lorasweep.training.peft_trainer`, one run at a time); None for the methods this
    package's engine trains (LoRA, DoRA and full fine-tuning)."""
    rank_keyword: str | None = None
    """The config keyword the run's rank r sets (``r``; AdaLoRA's ``target_r``); None for a
    method without a rank (IA3), whose runs ignore the grid's ``rank`` axis."""
    alpha_keyword: str | None = None
    """The config keyword the run's α sets (``lora_alpha``, LoHa's and LoKr's ``alpha``); None
    for a method without one, whose runs ignore the grid's ``alpha`` axis."""
    peft_defaults: tuple[tuple[str, object], ...] = ()
    """Keyword arguments it always passes beyond PEFT's defaults: OFT's block count by r, and
    FourierFT's zero-initialised spectrum (PEFT's default draws it at random, so the model would
    not start as the base, as every other method does)."""
    settings: tuple[str, ...] = ()
    """The config keywords ``method_settings`` may set for it (validated before any job)."""
    additive_shift: bool = True
    """Can represent an additive change W₀ + ΔW of the adapted weight (every low-rank method);
    False for the multiplicative and rotational ones (IA3 rescales, OFT and HRA rotate)."""
    allocates_rank: bool = False
    """Redistributes rank while it trains (AdaLoRA): the trainer calls PEFT's
    ``update_and_allocate`` after every step and adds its orthogonality penalty."""
    peft_optimizer: str | None = None
    """A PEFT optimizer factory it trains with instead of Adam (LoRA-FA's
    ``create_lorafa_optimizer``)."""
    rank_counts_entries: bool = False
    """Its "rank" counts entries of a module's weight (FourierFT's spectral coefficients), so it
    may be up to d_in·d_out rather than min(d_in, d_out)."""
    rank_divides_inputs: bool = False
    """Its r must divide every adapted module's in_features (OFT's r blocks of equal size)."""
    even_rank: bool = False
    """Its r must be even (HRA's symmetric init pairs its reflections)."""
    rank_bounds_update: bool = True
    """rank(ΔW) ≤ r, so the best rank-r change is the run's theoretical optimum; False where r
    is a block count, a number of frequencies or a base rank that a Hadamard or Kronecker
    product multiplies (the full-rank optimum is then the bound)."""
    lora_variant: bool = False
    """A variant of LoRA's BA adapter (DoRA, AdaLoRA, LoRA-FA): what "Learning Rate Matters"
    (arXiv 2602.04998) compares with LoRA once each is tuned."""
    source: str = ""
    """Where it comes from (paper), for the docs and the report."""

    @property
    def additive(self) -> bool:
        """The layer's output is W₀x + b + s·B(Ax), linear in the adapter's output, so caching
        W₀x (and the residual y − W₀x) is exact. DoRA's row norm couples W₀ and BA: not
        additive; nor is a method PEFT trains, which computes its own forward."""
        return self.adapter and not self.magnitude and not self.through_peft

    @property
    def has_factors(self) -> bool:
        """Its stored adapter is LoRA's factors A (r×d_in) and B (d_out×r); a method trained
        through PEFT stores PEFT's own tensors and its merged change of weight instead."""
        return self.adapter and not self.through_peft

    def update_rank(self, rank: int | None) -> int | None:
        """The rank that bounds its change of weight at run rank ``rank``; None for full
        fine-tuning and where r does not bound it (:attr:`rank_bounds_update`)."""
        if not self.adapter or not self.rank_bounds_update:
            return None
        if self.through_peft and self.rank_keyword is None:
            return None
        return rank

    @property
    def through_peft(self) -> bool:
        """Its runs train through real PEFT (``get_peft_model``), one run at a time."""
        return self.peft_config is not None

    def peft_arguments(self, rank: int | None, alpha: float | None, settings: dict) -> dict:
        """The PEFT config's keyword arguments for a run (without ``target_modules``): its rank
        and α where the method has them, :attr:`peft_defaults`, then the config's
        ``method_settings`` for it."""
        arguments = dict(self.peft_defaults)
        if self.rank_keyword is not None:
            arguments[self.rank_keyword] = rank
        if self.alpha_keyword is not None:
            arguments[self.alpha_keyword] = alpha
        return {**arguments, **settings}

    def run_tag(self) -> str:
        """The method's token in a run id (``lowrank__lora_r4…``, ``lowrank__dora_r4…``)."""
        return self.name

    def trained_parameters(self, d_in: int, d_out: int, rank: int | None, bias: bool) -> int:
        """Trainable parameters on one d_in → d_out layer: r(d_in + d_out) for an adapter, plus
        d_out for DoRA's m and for a trained bias; d_in·d_out + d_out for full fine-tuning."""
        if not self.adapter:
            return d_in * d_out + d_out
        count = rank * (d_in + d_out)
        if self.magnitude:
            count += d_out
        return count + (d_out if bias else 0)

    def step_multiply_adds(self, d_in: int, d_out: int, rank: int) -> int:
        """Multiply-add equivalents per step and run that one adapted d_in → d_out module costs
        whatever the mini-batch's size: DoRA's merged weight W₀ + s·BA (r·d_in·d_out for BA)
        and its row norms (:attr:`merged_weight_cost` per weight); 0 for LoRA."""
        if not self.merged_weight_cost:
            return 0
        return (rank + self.merged_weight_cost) * d_in * d_out

    def lr_groups(self, lr: float, lr_ratio: float) -> dict[str, float]:
        """Learning rate by trained tensor: LoRA+ puts B at lr·λ (Hayou et al. 2024,
        arXiv 2402.12354); A, m and biases at lr. Full fine-tuning: every tensor at lr."""
        if not self.adapter:
            return {"weight": lr, "bias": lr}
        groups = {"lora_A": lr, "lora_B": lr * lr_ratio}
        if self.magnitude:
            groups["magnitude"] = lr
        return {**groups, "bias": lr}

    def delta_weight_formula(self) -> str:
        """How its ΔW for geometry is formed (the merged weight minus W₀)."""
        if not self.adapter:
            return "W − W₀"
        if self.magnitude:
            return "m ⊙ (W₀ + s·BA)/‖W₀ + s·BA‖_row − W₀"
        return "s·BA"


@dataclass(frozen=True)
class Init:
    """How an adapter's A and B start (:meth:`lorasweep.models.lora.LoRALinear.reset_adapter`)."""

    name: str
    label: str
    peft_init_lora_weights: bool | str
    """PEFT's ``init_lora_weights`` for a saved adapter: the saved weights replace it on
    loading, so an init PEFT lacks is written as ``True``."""
    replaces_base: bool = False
    """Moves s·B₀A₀ out of W₀ and freezes the residual W₀ − s·B₀A₀ instead (PiSSA)."""
    peft_name: bool | str | None = None
    """PEFT's ``init_lora_weights`` value for this init when PEFT computes it itself (an
    adapter saved with it makes PEFT redo the init on loading); None where PEFT lacks it."""
    zero_start: bool = True
    """B₀ = 0, so the adapter is a no-op at step 0."""
    start: str = ""
    """How the adapter starts, in words (the tutorial figure's legend)."""
    tutorial_draws: bool = False
    """On the tutorial's dataset, A and B are the tutorial's own draws (the seed demo's
    ``torch.randn``), not the run's seed's."""


@dataclass(frozen=True)
class Scaling:
    """A rule for the adapter's output multiplier s."""

    name: str
    label: str
    source: str
    exponent: float | None
    """s = α / r^exponent; None for s = α whatever r."""
    peft_use_rslora: bool = False

    def factor(self, alpha: float, rank: int) -> float:
        """The multiplier s for α and r."""
        if rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank}")
        if self.exponent is None:
            return float(alpha)
        if self.exponent == 1:
            return alpha / rank
        if self.exponent == 0.5:
            return alpha / math.sqrt(rank)
        return alpha / rank**self.exponent

    def peft_alpha(self, alpha: float, rank: int) -> float:
        """PEFT's ``lora_alpha`` that, with ``use_rslora = peft_use_rslora``, gives the same s:
        α itself where PEFT has the rule, s·r (PEFT's α/r) otherwise."""
        if self.exponent is None:
            return self.factor(alpha, rank) * rank
        return float(alpha)


FULL = Method("full", "full FT", adapter=False)
LORA = Method("lora", "LoRA", adapter=True)
DORA = Method(
    "dora",
    "DoRA",
    adapter=True,
    magnitude=True,
    peft_use_dora=True,
    lora_variant=True,
    fused=False,
    merged_weight_cost=150,
    merged_weight_copies=2,
    output_copies=4,
)


def _peft(name: str, label: str, config: str, source: str, **fields) -> Method:
    """A method trained through real PEFT: an adapter on the frozen base, one run at a time,
    priced by the cost and memory models as a generic-objective method that forms a merged
    weight and two extra outputs per adapted module (an estimate; the run records what it
    actually trained, held, and took per step)."""
    fields = {"rank_keyword": "r", "merged_weight_copies": 1, "output_copies": 2, **fields}
    return Method(name, label, adapter=True, fused=False, peft_config=config, source=source,
                  **fields)  # fmt: skip


PEFT_RECORDS = (
    _peft("adalora", "AdaLoRA", "AdaLoraConfig", "Zhang et al. 2023, arXiv 2303.10512",
          rank_keyword="target_r", alpha_keyword="lora_alpha", allocates_rank=True,
          lora_variant=True,
          settings=("init_r", "tinit", "tfinal", "deltaT", "beta1", "beta2", "orth_reg_weight")),
    _peft("lora_fa", "LoRA-FA", "LoraConfig", "Zhang et al. 2023, arXiv 2308.03303",
          alpha_keyword="lora_alpha", peft_optimizer="create_lorafa_optimizer",
          lora_variant=True),
    _peft("vera", "VeRA", "VeraConfig", "Kopiczko et al. 2024, arXiv 2310.11454",
          settings=("d_initial", "projection_prng_key")),
    _peft("randlora", "RandLoRA", "RandLoraConfig", "Albert et al. 2025, arXiv 2502.00987",
          rank_bounds_update=False,
          settings=("randlora_alpha", "sparse", "very_sparse", "projection_prng_key")),
    _peft("loha", "LoHa", "LoHaConfig", "Hyeon-Woo et al. 2022, arXiv 2108.06098",
          alpha_keyword="alpha", rank_bounds_update=False,
          settings=("rank_dropout", "module_dropout", "use_effective_conv2d")),
    _peft("lokr", "LoKr", "LoKrConfig", "Edalati et al. 2022, arXiv 2212.10650",
          alpha_keyword="alpha", rank_bounds_update=False,
          settings=("decompose_both", "decompose_factor", "rank_dropout")),
    _peft("fourierft", "FourierFT", "FourierFTConfig", "Gao et al. 2024, arXiv 2405.03003",
          rank_keyword="n_frequency", rank_bounds_update=False, rank_counts_entries=True,
          peft_defaults=(("init_weights", True),),
          settings=("scaling", "random_loc_seed")),
    _peft("ia3", "IA³", "IA3Config", "Liu et al. 2022, arXiv 2205.05638", rank_keyword=None,
          additive_shift=False, settings=("feedforward_modules",)),
    _peft("oft", "OFT", "OFTConfig", "Qiu et al. 2023, arXiv 2306.07280",
          peft_defaults=(("oft_block_size", 0),), additive_shift=False, rank_bounds_update=False,
          rank_divides_inputs=True,
          settings=("coft", "eps", "block_share", "use_cayley_neumann")),
    _peft("hra", "HRA", "HRAConfig", "Yuan et al. 2024, arXiv 2405.17484",
          additive_shift=False, even_rank=True, settings=("apply_GS",)),
)  # fmt: skip
"""The methods trained through PEFT 0.21.2, each its config class; ``r`` is the rank
keyword unless said (FourierFT's is its number of frequencies, OFT's its number of blocks)."""

METHOD_RECORDS = (LORA, FULL, DORA, *PEFT_RECORDS)
ADAPTER_METHODS = tuple(m.name for m in METHOD_RECORDS if m.adapter)
"""The methods a grid's ``method`` axis may name; full fine-tuning is its own block."""

INIT_RECORDS = (
    Init(
        "kaiming", "kaiming", peft_init_lora_weights=True, peft_name=True, start="B = 0 (kaiming A)"
    ),
    Init(
        "gaussian",
        "gaussian",
        peft_init_lora_weights="gaussian",
        peft_name="gaussian",
        start="B = 0 (gaussian A)",
    ),
    Init(
        "pissa",
        "PiSSA",
        peft_init_lora_weights=True,
        replaces_base=True,
        zero_start=False,
        peft_name="pissa",
        start="PiSSA",
    ),
    Init(
        "randn",
        "randn",
        peft_init_lora_weights=True,
        zero_start=False,
        tutorial_draws=True,
        start="A, B ~ N(0, 1)",
    ),
)

SCALING_RECORDS = (
    Scaling("standard", "α/r", "LoRA §4.1, loralib, PEFT default", exponent=1),
    Scaling(
        "rslora", "α/√r", "Kalajdzievski 2023, arXiv 2312.03732", exponent=0.5, peft_use_rslora=True
    ),
    Scaling("constant", "α", "the seed demo (α = 1)", exponent=None),
)

_METHODS = {m.name: m for m in METHOD_RECORDS}
_INITS = {i.name: i for i in INIT_RECORDS}
_SCALINGS = {s.name: s for s in SCALING_RECORDS}


def _lookup(table: dict, kind: str, name: str):
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; allowed: {', '.join(table)}") from None


def method(name: str) -> Method:
    """The method record named ``name``; a ``ValueError`` naming the allowed ones otherwise."""
    return _lookup(_METHODS, "method", name)


def init(name: str) -> Init:
    """The init record named ``name``."""
    return _lookup(_INITS, "init", name)


def scaling(name: str) -> Scaling:
    """The scaling rule named ``name``."""
    return _lookup(_SCALINGS, "scaling", name)


def is_adapter(name: str) -> bool:
    """Whether method ``name`` trains an adapter (every method but full fine-tuning)."""
    return method(name).adapter


def is_full(name: str) -> bool:
    """Whether method ``name`` is full fine-tuning (trains every weight)."""
    return not method(name).adapter


def replaces_base(init_name: str | None) -> bool:
    """Whether an init (None for full fine-tuning) freezes a residual instead of W₀."""
    return init_name is not None and init(init_name).replaces_base


def method_from_peft(use_dora: bool) -> str:
    """The adapter method of a PEFT LoRA config with ``use_dora``."""
    return next(m.name for m in METHOD_RECORDS if m.adapter and m.peft_use_dora == bool(use_dora))


def scaling_from_peft(use_rslora: bool) -> str:
    """The scaling rule PEFT computes with ``use_rslora`` (α/√r or α/r)."""
    return next(
        s.name
        for s in SCALING_RECORDS
        if s.exponent is not None and s.peft_use_rslora == bool(use_rslora)
    )


def init_from_peft(init_lora_weights) -> str:
    """The init a loaded PEFT adapter must redo on its base: one that replaces the base where
    PEFT names it so (``"pissa"``), else the default, whose saved weights are used as they are."""
    for record in INIT_RECORDS:
        if record.replaces_base and record.peft_name == init_lora_weights:
            return record.name
    return INIT_RECORDS[0].name


REFERENCE_SCALING = SCALING_RECORDS[0]
"""The rule findings take as their reference (α/r, PEFT's default)."""


def adapter_rows(methods):
    """A boolean mask of ``methods`` (a pandas Series of method names, empty where a row is
    no run): the adapter runs."""
    return methods.map(lambda name: isinstance(name, str) and is_adapter(name)).astype(bool)


def factor_rows(methods):
    """A boolean mask of ``methods`` (as :func:`adapter_rows`): the runs of a method whose
    adapter is LoRA's factors (LoRA, DoRA; :attr:`Method.has_factors`), which the LoRA study's
    figures (against rank, of A's subspaces, of gradient norms) read."""
    return methods.map(lambda name: isinstance(name, str) and method(name).has_factors).astype(bool)


def full_rows(methods):
    """A boolean mask of ``methods`` (as :func:`adapter_rows`): the full fine-tuning runs."""
    return methods.map(lambda name: isinstance(name, str) and is_full(name)).astype(bool)


def scaling_label(name) -> str:
    """A scaling rule's label (α/r, α/√r, α); ``name`` itself where it names no rule (a full
    fine-tuning row's empty cell)."""
    return _SCALINGS[name].label if name in _SCALINGS else name


def full_name() -> str:
    """The name of the full fine-tuning baseline, which the ``full_finetune`` block makes."""
    return FULL.name


def default_method() -> str:
    """The method a grid trains when it gives no ``method`` axis."""
    return LORA.name
