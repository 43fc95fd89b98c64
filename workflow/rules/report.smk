rule report:
    input:
        runs=RESULTS.table("runs"),
        epochs=RESULTS.table("epochs"),
        efficiency=RESULTS.table("efficiency"),
        findings=RESULTS.table("findings"),
        provenance=RESULTS.table("provenance"),
        lr_optima=RESULTS.table("lr_optima"),
        intruders=RESULTS.table("intruders"),
        forgetting=RESULTS.table("forgetting"),
        intruder_means=RESULTS.table("intruder_means"),
        gaps=RESULTS.table("gaps"),
        methods=RESULTS.table("methods"),
        figures=figure_files("png"),
    output:
        report(
            RESULTS.report,
            caption="../report/report_html.rst",
            category="Report",
        ),
    log:
        RESULTS.log("report"),
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    params:
        code=stage_code("report"),
        captions=[caption_text(name) for name in FIGURE_NAMES],
        title=report_title(config),
        tolerance=config["report"]["tolerance"],
    script:
        "../scripts/report.py"


rule manifest:
    input:
        report=RESULTS.report,
        results=result_files(),
        jobs=job_manifests(),
    output:
        RESULTS.manifest,
    log:
        RESULTS.log("manifest"),
    localrule: True
    conda:
        "../envs/lorasweep.yaml"
    params:
        figures=FIGURE_NAMES,
    script:
        "../scripts/manifest.py"
