# The workflow lives in workflow/Snakefile (the Snakemake workflow catalogue's layout); this
# file lets `snakemake` run it from the repository root.


include: "workflow/Snakefile"


# An included file's default target does not carry over to the including one; name it.
workflow.default_target = "all"
