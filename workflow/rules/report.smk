rule report:
    input:
        runs=f"{RESULTS}/tables/runs.csv",
        epochs=f"{RESULTS}/tables/epochs.csv",
        timings=f"{RESULTS}/tables/timings.csv",
        pairs=f"{RESULTS}/tables/subspace_pairs.csv",
        provenance=f"{RESULTS}/tables/provenance.csv",
        figures=figure_files("png"),
    output:
        f"{RESULTS}/report.html",
    log:
        f"{RESULTS}/logs/report.log",
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    params:
        captions=[caption_text(name) for name in FIGURE_NAMES],
        title=config["report"]["title"],
        tolerance=config["report"]["tolerance"],
    script:
        "../scripts/report.py"


rule manifest:
    input:
        report=f"{RESULTS}/report.html",
        results=result_files(),
        jobs=job_manifests(),
    output:
        f"{RESULTS}/manifest.tsv",
    log:
        f"{RESULTS}/logs/manifest.log",
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    script:
        "../scripts/manifest.py"
