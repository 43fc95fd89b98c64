"""Snakemake script: generate one seeded dataset and its ground truth."""

from lorasweep.logs import workflow_script

with workflow_script(snakemake):  # noqa: F821
    from lorasweep.tasks import storage, synthetic

    sm = snakemake  # noqa: F821
    spec = synthetic.DatasetSpec.from_config(sm.params.spec)
    storage.save(synthetic.generate(spec), sm.output.tensors, sm.output.meta)
    print(f"wrote {spec.name}: {spec.kind} {spec.in_features}→{spec.out_features}")
