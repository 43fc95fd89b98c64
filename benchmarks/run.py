"""Run the benchmark suite, print one table per benchmark and a summary against the targets,
and write results/benchmarks/*.csv.

    python -m benchmarks.run                 # everything (about 15 minutes on 2 cores)
    python -m benchmarks.run step memory     # a subset
"""

from __future__ import annotations

import argparse

from benchmarks import common, grid, memory, scale, step

SUITES = ("step", "memory", "grid", "scale")


def _target(name: str, measured: float, target: str, ok: bool) -> dict:
    return {"target": name, "measured": measured, "goal": target, "met": "yes" if ok else "no"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="*", help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of whole-pipeline timings")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md unchanged")
    args = parser.parse_args(argv)
    suites = args.suites or list(SUITES)
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    machine = common.machine()
    print(f"machine: {machine}")
    targets = []

    if "step" in suites:
        frame = step.run()
        common.write("step", frame)
        common.show(common.TITLES["step"], frame)
        big = frame[(frame["d_in"] == 4096) & (frame["rank"] == 8) & (frame["batch"] == 4096)]
        cached = big[big["variant"] == "ours_cached"].iloc[0]
        for ref in ("loralib", "peft"):
            ratio = cached[f"speedup_vs_{ref}"]
            targets.append(
                _target(f"epoch 4096², r8, b4096: cached vs {ref}", ratio, ">= 20×", ratio >= 20)
            )

    if "memory" in suites:
        frame = memory.run()
        common.write("memory", frame)
        common.show(common.TITLES["memory"], frame)
        lora = frame.set_index("method").loc["lora"]
        targets.append(_target("training state LoRA / full", lora["state_vs_full"], "<= 0.01",
                               lora["state_vs_full"] <= 0.01))  # fmt: skip
        targets.append(_target("peak RSS LoRA / full", lora["rss_vs_full"], "<= 0.6",
                               lora["rss_vs_full"] <= 0.6))  # fmt: skip

    if "grid" in suites:
        frame = grid.run(repeats=args.repeats)
        common.write("grid", frame)
        common.show(common.TITLES["grid"], frame)
        ratio = frame.set_index("variant").loc["pipeline", "ratio_to_fastest_loop"]
        targets.append(
            _target("pipeline / in-process loop", ratio, "<= 1.0 (aim 0.7)", ratio <= 1.0)
        )

    if "scale" in suites:
        dry = scale.dry_run()
        common.write("scale_dry_run", dry)
        common.show(common.TITLES["scale_dry_run"], dry)
        ratio = dry.set_index("variant").loc["pipeline", "ratio_to_bare"]
        targets.append(_target("dry run 10k / bare expand()", ratio, "<= 1.5", ratio <= 1.5))
        growth = scale.growth()
        common.write("scale_growth", growth)
        common.show(common.TITLES["scale_growth"], growth)
        by_runs = growth.set_index("runs")["median_s"]
        for small, large in ((10, 100), (100, 1000)):
            ratio = by_runs[large] / by_runs[small]
            name, goal = f"wall time {large} runs / {small} runs", f"<= {large // small} (linear)"
            targets.append(_target(name, ratio, goal, ratio <= large / small))

    common.show("Targets", common.write_summary(targets))
    if not args.no_readme:
        common.update_readme(machine)


if __name__ == "__main__":
    main()
