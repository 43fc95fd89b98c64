for figure_name in FIGURE_NAMES:

    rule:
        name:
            f"figure_{figure_name}"
        input:
            **figure_inputs(figure_name),
        output:
            pdf=f"{RESULTS}/figures/{figure_name}.pdf",
            png=report(
                f"{RESULTS}/figures/{figure_name}.png",
                caption=f"../report/captions/{figure_name}.rst",
                category="Figures",
            ),
        log:
            f"{RESULTS}/logs/figures/{figure_name}.log",
        localrule: True
        conda:
            "../envs/lorasweep.yaml"
        params:
            figure=figure_name,
        script:
            "../scripts/figure.py"
