"""A dataset entry of the config as a typed record (importable without torch, so the Snakefile
can compare it with what results/ holds). The tasks themselves are drawn in
:mod:`lorasweep.tasks.synthetic` and :mod:`lorasweep.tasks.deep`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lorasweep.options import DEEP_KINDS, test_size


@dataclass(frozen=True)
class SourceSpec:
    """The source task of a ``lowrank`` dataset (see the module docstring): ``n`` samples
    concentrated on W₀'s top ``top_directions`` right-singular directions, with variance
    ``leak`` in every other direction (and the target task's inputs ``leak`` on those)."""

    n: int
    top_directions: int
    leak: float = 0.05


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset entry of the config (see config/README.md for each key)."""

    name: str
    kind: str
    in_features: int
    out_features: int
    n_train: int
    n_val: int
    noise_std: float
    task_rank: int = 0
    task_scale: float = 1.0
    spectrum_decay: float = 1.0
    seed: int = 0
    n_test: int | None = None
    """Samples in the test split; None (the config's default) takes ``n_val``."""
    task_seed: int = 0
    """The replicate: another task seed redraws W₀, ΔW*, every split and the noise
    (:func:`stream`); 0 is the dataset as it always was."""
    source: SourceSpec | None = None
    compat: str = "none"
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    seq_len: int | None = None
    d_ff: int | None = None
    shifted: str | None = None
    """The deep kinds' architecture and shifted modules; None for the single-layer kinds."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_test", test_size(vars(self)))

    @classmethod
    def from_config(cls, entry: dict) -> DatasetSpec:
        """The spec of a config entry. The deep kinds shift ``all`` modules unless told
        otherwise, and the transformer's input and output width is ``d_model``."""
        known = {f for f in cls.__dataclass_fields__}
        fields = {k: v for k, v in entry.items() if k in known}
        if fields.get("source") is not None:
            fields["source"] = SourceSpec(**fields["source"])
        if fields["kind"] in DEEP_KINDS:
            fields.setdefault("shifted", "all")
        if fields["kind"] == "transformer":
            fields["in_features"] = fields["out_features"] = fields["d_model"]
        return cls(**fields)

    def as_dict(self) -> dict:
        """The spec as stored in the sidecar, without what its kind does not use (``source``
        where there is none, the deep keys for one layer) and without task seed 0, so datasets
        without them keep the sidecar they always had."""
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        if self.task_seed == 0:
            del fields["task_seed"]
        return fields

    def task_singular_values(self) -> list[float]:
        """s_i = task_scale · spectrum_decay^(i−1), i = 1…task_rank (empty for ``noise``)."""
        if self.kind == "noise":
            return []
        return [self.task_scale * self.spectrum_decay**i for i in range(self.task_rank)]
