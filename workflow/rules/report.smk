rule report:
    input:
        runs=f"{RESULTS}/tables/runs.csv",
        timings=f"{RESULTS}/tables/timings.csv",
        figures=figure_files("png"),
    output:
        f"{RESULTS}/report.html",
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../envs/lorasweep.yaml"
    params:
        captions=[caption_text(name) for name in FIGURES],
        title=config["report"]["title"],
        tolerance=config["report"]["tolerance"],
    script:
        "../scripts/report.py"
