"""Shared helpers: repeat timings, summarise them, write CSVs, print one table."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("LORASWEEP_BENCH_OUT", REPO / "results" / "benchmarks"))


def machine() -> str:
    """One line naming this machine: CPU model, cores, memory, torch build."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    line = f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, torch {torch.__version__}, {device}"
    probe = slurm_probe_seconds()
    if probe is not None:
        line += (
            f"; Slurm's client is installed without a controller, so each Snakemake start would"
            f" wait {probe:.1f} s on its Slurm plugin's probe: benchmarked commands see an"
            f" `scontrol` that fails at once, as on a machine without Slurm"
        )
    return line


def repeat(fn: Callable[[], object], repeats: int = 5, budget_s: float = 20.0, warmup: int = 1):
    """Wall-clock seconds of ``fn`` over up to ``repeats`` calls (at least 3, fewer calls if the
    budget runs out), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float], prefix: str = "") -> dict:
    return {
        f"{prefix}median_s": statistics.median(times),
        f"{prefix}min_s": min(times),
        f"{prefix}max_s": max(times),
        f"{prefix}repeats": len(times),
    }


SLURM_PROBE_TIMEOUT_S = 30


@cache
def slurm_probe_seconds() -> float | None:
    """Seconds ``scontrol show config`` takes to fail when Slurm's client is installed but no
    controller answers (None where it is absent or answers). Snakemake's Slurm executor plugin
    runs that probe, with a 10 s timeout, each time Snakemake starts, whatever the executor."""
    if shutil.which("scontrol") is None:
        return None
    start = time.perf_counter()
    try:
        probe = subprocess.run(["scontrol", "show", "config"], capture_output=True,
                               timeout=SLURM_PROBE_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        return float(SLURM_PROBE_TIMEOUT_S)
    return None if probe.returncode == 0 else time.perf_counter() - start


@cache
def command_env() -> dict[str, str]:
    """The environment benchmarked commands run in: this one, except that where Slurm's client
    has no controller (:func:`slurm_probe_seconds`) an ``scontrol`` that fails at once comes
    first on PATH, so the timings are those of a workstation without Slurm. The CI machines
    install Slurm's client for the Slurm tests and start its controller only for them."""
    env = dict(os.environ)
    if slurm_probe_seconds() is not None:
        shim = Path(tempfile.mkdtemp(prefix="bench-no-slurm-"))
        (shim / "scontrol").write_text("#!/bin/sh\nexit 1\n")
        (shim / "scontrol").chmod(0o755)
        env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    return env


def measured_command(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float]:
    """Wall-clock seconds a command takes from start to exit, and the CPU seconds (user + system)
    it and every process it waited for used; raises if it fails. On a shared machine the CPU
    seconds are the steadier of the two. ``env`` defaults to :func:`command_env`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = command_env() if env is None else env
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def timed_command(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    """Seconds a command takes from start to exit; raises if it fails."""
    return measured_command(cmd, cwd, env)[0]


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def snakemake_cmd(*args: str) -> list[str]:
    """Snakemake on this clone's Snakefile, quiet, with ``args`` (cores, config files, targets)."""
    return python_cmd("-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--quiet", "all",
                      *args)  # fmt: skip


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread inside the block, as every training job runs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write(name: str, frame: pd.DataFrame) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.csv"
    frame.to_csv(path, index=False, float_format="%.6g")
    return path


def show(title: str, frame: pd.DataFrame) -> None:
    print(f"\n## {title}\n")
    print(
        frame.to_markdown(index=False, floatfmt=".4g")
        if _has_tabulate()
        else frame.to_string(index=False)
    )


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


BENCHMARKS_DOC = REPO / "docs" / "benchmarks.md"
DOC_HEAD = """<!-- Generated by `make bench` (benchmarks/run.py) from results/benchmarks/*.csv;
do not edit by hand: rerun `make bench` (`make bench BENCH_ARGS="step memory"` for some
suites). -->

# Benchmarks

`make bench` installs loralib and PEFT (the optional `bench` extra) and runs the suites in
[benchmarks/](../benchmarks): the default grid from clean to `runs.csv` with the batched engine,
with `train.engine: single`, in one process, and as the plain-PyTorch per-run loop a user would
write ([benchmarks/user_loop.py](../benchmarks/user_loop.py): a loralib-style layer over the
frozen base, Adam, shuffled mini-batches, validation each epoch); the paper preset end to end;
the engine's achieved GFLOP/s against one large GEMM, and ranks grouped against padded
([benchmarks/engine.py](../benchmarks/engine.py)); deep-model runs batched against one by one
([benchmarks/deep.py](../benchmarks/deep.py)); the GPU rows (where a GPU is present); step and
epoch times against loralib, PEFT, full fine-tuning, a frozen forward pass and one pass over X
(the memory-bandwidth floor); memory; and scaling with the number of runs up to 10,000. Every
ratio is measured side by side in the same run; wall times on a shared machine are noisy, so the
whole-pipeline tables also give the CPU seconds of every process. The design these numbers
measure is in [engine.md](engine.md).

"""
"""Everything of docs/benchmarks.md before the latest run's tables."""


TITLES = {
    "summary": "Targets",
    "grid": "Grid throughput, default config, from clean to runs.csv (seconds; CPU = user + "
    "system of every process)",
    "paper": "Paper preset, clean, end to end with the report (seconds)",
    "methods": "Methods preset, clean, end to end with the report (seconds)",
    "engine": "Batched engine in one process, one thread: roofline and rank layout",
    "deep": "Batched engine on config/deep.yaml's tf_mlp transformer (LoRA on its MLP, 4 epochs,"
    " one seed per run): CPU seconds at one thread, together and one by one",
    "gpu": "GPU",
    "step": "Step and epoch time (seconds; speedups per epoch, same run)",
    "memory": "Memory at 4096×4096, r=8, batch 4096 (fresh process each)",
    "scale_dry_run": "Dry run of a 10,000-run grid vs a bare expand() Snakefile (seconds)",
    "scale_growth": "Pipeline wall time against number of runs (seconds)",
}


def write_summary(targets: list[dict]) -> pd.DataFrame:
    """Write summary.csv: these targets, plus those of suites not run now from the last one."""
    previous = OUT / "summary.csv"
    rows = pd.read_csv(previous).to_dict("records") if previous.exists() else []
    measured = {t["target"] for t in targets}
    merged = pd.DataFrame([*targets, *[r for r in rows if r["target"] not in measured]])
    write("summary", merged)
    return merged


def benchmarks_doc(machine_line: str, date: str) -> str:
    """docs/benchmarks.md from results/benchmarks/*.csv, so its numbers are generated, never
    typed in."""
    body = [f"Latest run: {date}, on {machine_line}.", ""]
    for name, title in TITLES.items():
        path = OUT / f"{name}.csv"
        if path.exists():
            table = pd.read_csv(path).to_markdown(index=False, floatfmt=".4g")
            body += [f"**{title}**", "", table, ""]
    return DOC_HEAD + "\n".join(body)


def write_benchmarks_doc(machine_line: str) -> None:
    """Rewrite docs/benchmarks.md, the one file ``make bench`` changes outside results/."""
    BENCHMARKS_DOC.write_text(benchmarks_doc(machine_line, time.strftime("%Y-%m-%d")))
