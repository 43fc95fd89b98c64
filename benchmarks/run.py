"""Run the benchmark suite, print one table per benchmark and a summary against the targets,
and write results/benchmarks/*.csv.

    python -m benchmarks.run                 # everything (about 17 minutes on 2 cores)
    python -m benchmarks.run grid engine     # a subset

Every ratio is measured side by side in one run; on a machine shared with other work, wall
times are noisy, so the grid and scale tables also give the CPU seconds of every process.
"""

from __future__ import annotations

import argparse
import math

import pandas as pd

from benchmarks import common, deep, engine, grid, memory, scale, step

SUITES = ("grid", "paper", "methods", "engine", "deep", "gpu", "step", "memory", "scale")


def _target(name: str, measured: float, target: str, ok: bool) -> dict:
    return {"target": name, "measured": measured, "goal": target, "met": "yes" if ok else "no"}


def _record(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    common.write(name, frame)
    common.show(common.TITLES[name], frame)
    return frame


def grid_targets(args) -> list[dict]:
    ratios = _record("grid", grid.run(repeats=args.repeats)).set_index("variant")
    targets = []
    for other, limit in (("user_loop", 0.2), ("pipeline_single", 0.5), ("in_process_loop", 1.0)):
        ratio = ratios.loc[other, "pipeline_over_this"]
        name = f"default grid: pipeline / {other.replace('_', ' ')}"
        targets.append(_target(name, ratio, f"<= {limit}", ratio <= limit))
    return targets


def paper_targets(args) -> list[dict]:
    seconds = _record("paper", grid.paper())["median_s"].iloc[0]
    return [_target("paper preset end to end (s)", seconds, "<= 60", seconds <= 60)]


def methods_targets(args) -> list[dict]:
    seconds = _record("methods", grid.methods())["median_s"].iloc[0]
    return [{"target": "methods preset end to end (s)", "measured": seconds,
             "goal": "no target set", "met": "no target"}]  # fmt: skip


def engine_targets(args) -> list[dict]:
    rows = _record("engine", engine.run()).set_index("variant")
    fraction = rows["fraction_of_gemm"].dropna().iloc[0]
    grouped, padded = rows["seconds"].iloc[2], rows["seconds"].iloc[3]
    return [
        _target("engine GFLOP/s / one large GEMM", fraction, ">= 0.3 (aim)", fraction >= 0.3),
        _target("LoRA ranks padded / grouped (time)", padded / grouped, "> 1: grouping chosen",
                padded / grouped > 1),
    ]  # fmt: skip


def deep_targets(args) -> list[dict]:
    rows = _record("deep", deep.run()).set_index("runs")["one_by_one_over_batched"]
    largest = rows.index.max()
    name = f"deep model, {largest} runs: one by one / batched (CPU time)"
    return [_target(name, rows[largest], "> 1 (no target set)", rows[largest] > 1)]


def gpu_targets(args) -> list[dict]:
    value = _record("gpu", engine.gpu())["value"].iloc[0]
    measured = value != "not measured"
    ratio = float(value.rstrip("×")) if measured else math.nan
    met = ("yes" if ratio >= 50 else "no") if measured else "not measured"
    name = "GPU: per-run loop / engine, 1000 runs at 256²"
    return [{"target": name, "measured": ratio, "goal": ">= 50×", "met": met}]


def step_targets(args) -> list[dict]:
    frame = _record("step", step.run())
    big = frame[(frame["d_in"] == 4096) & (frame["rank"] == 8) & (frame["batch"] == 4096)]
    cached = big[big["variant"] == "ours_cached"].iloc[0]
    targets = []
    for ref in ("loralib", "peft"):
        ratio = cached[f"speedup_vs_{ref}"]
        name = f"epoch 4096², r8, b4096: cached vs {ref}"
        targets.append(_target(name, ratio, ">= 20×", ratio >= 20))
    read_x = frame[(frame["d_in"] == 4096) & (frame["batch"] == 4096)]
    floor = read_x[read_x["variant"] == "read_x"]["epoch_median_s"].iloc[0]
    over_floor = cached["epoch_median_s"] / floor
    name = "epoch 4096², r8, b4096: cached / one pass over X"
    targets.append({"target": name, "measured": over_floor, "goal": "bandwidth floor = 1",
                    "met": "no target"})  # fmt: skip
    return targets


def memory_targets(args) -> list[dict]:
    lora = _record("memory", memory.run()).set_index("method").loc["lora"]
    return [
        _target("training state LoRA / full", lora["state_vs_full"], "<= 0.01",
                lora["state_vs_full"] <= 0.01),
        _target("peak RSS LoRA / full", lora["rss_vs_full"], "<= 0.6", lora["rss_vs_full"] <= 0.6),
    ]  # fmt: skip


def scale_targets(args) -> list[dict]:
    dry = _record("scale_dry_run", scale.dry_run())
    ratio = dry.set_index("variant").loc["pipeline", "ratio_to_bare"]
    targets = [_target("dry run 10k / bare expand()", ratio, "<= 1.5", ratio <= 1.5)]
    by_runs = _record("scale_growth", scale.growth()).set_index("runs")["median_s"]
    for small, large in ((10, 100), (100, 1000), (1000, 10_000)):
        ratio = by_runs[large] / by_runs[small]
        name, goal = f"wall time {large} runs / {small} runs", f"<= {large // small} (linear)"
        targets.append(_target(name, ratio, goal, ratio <= large / small))
    seconds = by_runs[10_000]
    targets.append(_target("10,000 runs end to end (s)", seconds, "<= 600", seconds <= 600))
    return targets


TARGETS = {
    "grid": grid_targets,
    "paper": paper_targets,
    "methods": methods_targets,
    "engine": engine_targets,
    "deep": deep_targets,
    "gpu": gpu_targets,
    "step": step_targets,
    "memory": memory_targets,
    "scale": scale_targets,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="*", help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of whole-pipeline timings")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/benchmarks.md unchanged")
    args = parser.parse_args(argv)
    suites = args.suites or list(SUITES)
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    machine = common.machine()
    print(f"machine: {machine}")
    targets = [target for suite in SUITES if suite in suites for target in TARGETS[suite](args)]
    common.show("Targets", common.write_summary(targets))
    if not args.no_doc:
        common.write_benchmarks_doc(machine)


if __name__ == "__main__":
    main()
