"""A self-contained HTML report: summary; findings (the five of :mod:`~lorasweep.analysis.findings`
on the LoRA and rsLoRA papers, the five of :mod:`~lorasweep.analysis.evidence_findings` on newer
studies and, for deep models, the three of :mod:`~lorasweep.analysis.deep_findings`); the
efficiency table; the newer-evidence and fixed-budget sections; figures (embedded); the runs
explorer; diverged runs; provenance.

Every number in it is computed from the tables; nothing is typed in.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from lorasweep.analysis import statistics
from lorasweep.analysis.findings import NOT_TESTED
from lorasweep.analysis.intervals import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from lorasweep.models import registry
from lorasweep.options import DEEP_KINDS
from lorasweep.report import deep, explorer
from lorasweep.report.evidence import evidence_sections
from lorasweep.report.methods import methods_section

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:62rem;margin:2rem auto;
padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0;max-width:100%}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right;overflow-wrap:anywhere}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
table.findings td{text-align:left;vertical-align:top}
figure{margin:1.5rem 0}figure img{max-width:100%}figcaption{font-size:.9rem;color:#444}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5rem 1rem}
code{background:#f4f4f4;padding:0 .2rem;overflow-wrap:anywhere}
p,li,figcaption{overflow-wrap:anywhere}
"""


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def fmt_loss(mean: float, sd: float | None = None) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    return f"{mean:.4g}" if not sd else f"{mean:.4g} ± {sd:.2g}"


def _row_loss(row: pd.Series) -> str:
    """An efficiency row's reported loss: the final test MSE (validation where the runs have no
    test split), mean ± sd, naming the split."""
    test = row.get("final_test_loss")
    if test is not None and pd.notna(test):
        return f"{fmt_loss(test, row['final_test_loss_sd'])} (test)"
    return f"{fmt_loss(row['final_val_loss'], row['final_val_loss_sd'])} (validation)"


def summary_sentences(runs: pd.DataFrame, table: pd.DataFrame, tolerance: float) -> list[str]:
    """The generated findings, one or more sentences per dataset, saying so where every run
    of a dataset (or every run of one method) diverged."""
    return [
        _dataset_prefix(runs, dataset)
        + _dataset_summary(runs[runs["dataset"] == dataset], table, dataset, tolerance)
        for dataset in sorted(runs["dataset"].unique())
    ]


def _dataset_summary(ran: pd.DataFrame, table: pd.DataFrame, dataset: str, tolerance: float) -> str:
    """One dataset's sentence from its runs ``ran`` and the efficiency ``table``, which has no
    row for a method whose runs all diverged."""
    rows = table[table["dataset"] == dataset] if not table.empty else table
    if rows.empty:
        return (
            f"every one of its {len(ran)} runs diverged (listed under Diverged runs), so there "
            "is no loss to summarise."
        )
    return _lora_against_full(
        rows, tolerance, full_ran=bool((registry.full_rows(ran["method"])).any())
    )


def _dataset_prefix(runs: pd.DataFrame, dataset: str) -> str:
    """The dataset's name, shape, task and noise floor."""
    meta = runs[runs["dataset"] == dataset].iloc[0]
    shape = f"{meta['in_features']}→{meta['out_features']}"
    task = (
        f"task rank {meta['task_rank']}"
        if meta["dataset_kind"] == "lowrank"
        else "targets independent of inputs"
    )
    if meta["dataset_kind"] in DEEP_KINDS:
        shape, task = deep.describe_task(meta)
    floor = meta["noise_floor"]
    return f"<b>{html.escape(dataset)}</b> ({shape}, {task}, noise floor σ² = {floor:.4g}): "


def _lora_against_full(rows: pd.DataFrame, tolerance: float, full_ran: bool = True) -> str:
    """How LoRA compares with full fine-tuning, from one dataset's efficiency rows (at least
    one); ``full_ran`` tells a full fine-tuning that diverged from one not run at all. Where
    several adapter methods ran, each row it names is named with its method's label."""
    lora = rows[registry.factor_rows(rows["method"])]
    full = rows[registry.full_rows(rows["method"])]
    best = lora.loc[lora["final_val_loss"].idxmin()] if not lora.empty else None
    which = ""
    if best is not None and lora["method"].nunique() > 1:
        which = f"{registry.method(best['method']).label} "
    if full.empty:
        return (
            f"the lowest final validation MSE is {_row_loss(best)} "
            f"at {which}r = {best['rank']} with {best['trainable_params']:,} trainable parameters "
            f"({best['trainable_pct']:.1f} % of {best['total_params']:,}); "
            + (
                "every full fine-tuning run diverged."
                if full_ran
                else "full fine-tuning was not run in this config."
            )
        )
    ref = full.iloc[0]
    full_text = (
        f"full fine-tuning reaches {_row_loss(ref)} "
        f"with {ref['trainable_params']:,} trainable parameters"
    )
    if best is None:
        return full_text + "; every LoRA run diverged."
    hit = statistics.first_rank_matching_full(rows, tolerance)
    if hit is None:
        return full_text + (
            f"; no LoRA rank comes within {tolerance:.0%} of it "
            f"(best: {which}r = {best['rank']} at {_row_loss(best)})."
        )
    return full_text + (
        f"; {registry.method(hit['method']).label} at r = {hit['rank']} "
        f"({html.escape(hit['settings'])}) "
        f"reaches {_row_loss(hit)}, within "
        f"{tolerance:.0%}, with {hit['trainable_params']:,} trainable parameters "
        f"({1 / hit['params_vs_full']:.1f}× fewer) and {fmt_bytes(hit['train_state_bytes'])} "
        f"of training state against {fmt_bytes(ref['train_state_bytes'])} "
        f"({1 / hit['state_vs_full']:.1f}× less)."
    )


def count_notes(runs: pd.DataFrame) -> list[str]:
    """Explain trainable counts that differ from the adapter's rank·(d_in + d_out)."""
    notes = []
    for note in statistics.seed_demo_count_note(runs):
        notes.append(
            f"<b>{html.escape(note['dataset'])}</b>, r = {note['rank']}: "
            f"{note['trainable_params']:,} of {note['total_params']:,} parameters train. "
            f"The adapter alone has r·(d_in + d_out) = {note['adapter_params']:,}, the number the "
            f"seed demo's text claims; the other {note['bias_params']:,} are the base layer's bias "
            f"(one per output feature, {note['out_features']}), which the demo leaves trainable "
            "because it freezes only <code>linear.weight</code> "
            "(here: <code>bias: lora_only</code>). "
            "With <code>bias: none</code>, the PEFT and loralib default, "
            f"{note['adapter_params']:,} would train."
        )
    return notes


def _table_html(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p>No completed runs.</p>"
    shown = pd.DataFrame(
        {
            "dataset": table["dataset"],
            "method": [
                f"{registry.method(m).label} r={r}" if registry.is_adapter(m) else "full FT"
                for m, r in zip(table["method"], table["rank"], strict=True)
            ],
            "best settings": table["settings"],
            "trainable params": table["trainable_params"].map("{:,}".format),
            "% trainable": table["trainable_pct"].map("{:.2f}".format),
            "training state": table["train_state_bytes"].map(fmt_bytes),
            "saved weights": table["adapter_bytes"].map(fmt_bytes),
            "time / epoch": table["epoch_seconds"].map(
                lambda s: f"{1000 * s:.1f} ms" if math.isfinite(s) else "n/a"
            ),
            "final val MSE (selection)": [
                fmt_loss(m, s)
                for m, s in zip(table["final_val_loss"], table["final_val_loss_sd"], strict=True)
            ],
            "final test MSE": [
                fmt_loss(m, s)
                for m, s in zip(table["final_test_loss"], table["final_test_loss_sd"], strict=True)
            ],
            "rank-r optimum": table["optimal_val_loss"].map(
                lambda v: f"{v:.4g}" if pd.notna(v) else "n/a"
            ),
            "test loss / full FT": table["test_loss_vs_full"].map(
                lambda v: f"{v:.3f}" if math.isfinite(v) else "n/a"
            ),
            "settings searched": table["settings_searched"],
            "task replicates": table["n_replicates"],
            "runs": table["seeds"],
        }
    )
    return shown.to_html(index=False, escape=True, border=0)


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def findings_html(table: pd.DataFrame) -> str:
    """The findings table (``tables/findings.csv``) as the report shows it; each row carries
    its claim id as ``data-claim``."""
    colors = {
        REPRODUCED: "#1b7837",
        NOT_REPRODUCED: "#b2182b",
        INCONCLUSIVE: "#8c6d00",
        NOT_TESTED: "#666",
    }
    rows = "".join(
        f'<tr data-claim="{html.escape(f.claim_id)}"><td>{html.escape(f.claim)}</td>'
        f'<td style="color:{colors[f.verdict]};font-weight:600">{f.verdict}</td>'
        f"<td>{html.escape(f.search_budget)}</td>"
        f"<td>{html.escape(f.evidence)}</td></tr>"
        for f in table.itertuples()
    )
    return (
        '<table class="findings"><thead><tr><th>claim</th><th>verdict</th>'
        "<th>settings searched per arm</th>"
        f"<th>this run</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def render(
    runs: pd.DataFrame,
    epochs: pd.DataFrame,
    figures: Mapping[str, tuple[str | Path, str]],
    efficiency: pd.DataFrame,
    findings: pd.DataFrame,
    provenance: pd.DataFrame | None = None,
    title: str = "LoRA vs full fine-tuning",
    tolerance: float = 0.05,
    lr_optima: pd.DataFrame | None = None,
    intruders: pd.DataFrame | None = None,
    forgetting: pd.DataFrame | None = None,
    intruder_means: pd.DataFrame | None = None,
    gaps: pd.DataFrame | None = None,
    methods: pd.DataFrame | None = None,
) -> str:
    """The report as one HTML string. ``figures`` maps a name to (PNG path, caption);
    ``efficiency``, ``findings`` and ``methods`` are the summary tables
    (:mod:`lorasweep.analysis.summary`)."""
    failed = statistics.diverged(runs)
    parts = [
        *_head(title, runs, failed),
        "<h2>Summary</h2>",
        *(f"<p>{s}</p>" for s in summary_sentences(runs, efficiency, tolerance)),
        "<h2>Findings</h2>",
        "<p>Each claim, from the LoRA and rsLoRA papers and newer studies, checked against this "
        "run's tables, as <code>tables/findings.csv</code> holds it. Every arm is tuned on its "
        "own grid and its best settings are chosen on the validation split; the quality claims "
        "are judged on the held-out test split of those runs, on a 95 % bootstrap interval over "
        "task replicates (or seeds, with one task): inconclusive where the interval straddles "
        "the claim's threshold, fixed in code. Next to each verdict, every compared arm's "
        "number of settings searched.</p>",
        findings_html(findings),
        *_count_notes_section(runs),
        *_efficiency_section(efficiency),
        *methods_section(methods),
        *evidence_sections(lr_optima, intruders, forgetting, intruder_means, gaps),
        *deep.budget_section(runs),
        "<h2>Figures</h2>",
        *(_figure_html(name, Path(png), caption) for name, (png, caption) in figures.items()),
        explorer.section(runs),
        *_diverged_section(failed),
        *_provenance_section(provenance),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _head(title: str, runs: pd.DataFrame, failed: pd.DataFrame) -> list[str]:
    """Document head, title and the one-line count of runs."""
    n_lora = int((registry.factor_rows(runs["method"])).sum())
    n_full = int((registry.full_rows(runs["method"])).sum())
    n_other = len(runs) - n_lora - n_full
    other = f", {n_other} of the other methods" if n_other else ""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(runs)} runs ({n_lora} LoRA{other}, {n_full} full fine-tuning) on "
        f"{runs['dataset'].nunique()} dataset(s) with {runs['seed'].nunique()} seed(s); "
        f"{'every run' if len(failed) == len(runs) else len(failed)} diverged.</p>",
    ]


def _count_notes_section(runs: pd.DataFrame) -> list[str]:
    notes = count_notes(runs)
    if not notes:
        return []
    return ["<h2>Parameter counts</h2>", *(f'<p class="note">{n}</p>' for n in notes)]


def _efficiency_section(table: pd.DataFrame) -> list[str]:
    return [
        "<h2>Efficiency: LoRA vs full fine-tuning</h2>",
        "<p>Each row uses the settings with the lowest mean final validation loss for that "
        "rank (or, for full FT, that learning rate), out of the settings searched; the final "
        "test MSE of the same runs is what the row reports (the test split took no part in the "
        "choice), and its ratio to full FT's. Losses are mean ± sd over runs. Training "
        "state is trainable parameters + gradients + Adam's two moments, measured from the "
        "live tensors. Time per epoch is wall-clock on the machine that ran the job.</p>",
        _table_html(table),
    ]


def _figure_html(name: str, png: Path, caption: str) -> str:
    return (
        f"<figure>{_image(png)}<figcaption><b>{html.escape(name)}.</b> "
        f"{html.escape(caption)}</figcaption></figure>"
    )


def _diverged_section(failed: pd.DataFrame) -> list[str]:
    if failed.empty:
        return []
    return [
        "<h2>Diverged runs</h2><p>Left out of every mean and figure.</p>",
        failed[["run_id", "diverged_epoch"]].to_html(index=False, escape=True, border=0),
    ]


def _provenance_section(provenance: pd.DataFrame | None) -> list[str]:
    if provenance is None or provenance.empty:
        return []
    return [
        "<h2>Provenance</h2><p>Software, commit and device of the runs (one row per "
        "distinct environment). Each run's <code>provenance.json</code> has its resolved "
        "parameters and dataset checksum; <code>manifest.tsv</code> lists the SHA-256 of "
        "every result file that two runs can compare (all but the wall-clock timings and this "
        "report).</p>",
        provenance.to_html(index=False, escape=True, border=0),
    ]
