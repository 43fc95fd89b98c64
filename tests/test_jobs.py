"""Reuse keys: a finished run is reused only for the same settings, data, code and threads."""

import torch

from lorasweep.jobs.job import run_job
from lorasweep.jobs.reuse import code_fingerprint, reuse_key
from lorasweep.planning.runs import RunSpec
from lorasweep.tasks import storage, synthetic

SPEC = RunSpec(dataset="d", method="lora", seed=0, lr=0.01, epochs=2, batch_size=32, bias="none",
               device="cpu", rank=2, alpha=4.0, scaling="standard", init="kaiming")  # fmt: skip
CPU = torch.device("cpu")


def test_reuse_key_changes_with_anything_that_changes_the_result():
    key = reuse_key(SPEC, "abc", CPU, 1)
    assert key == reuse_key(SPEC, "abc", CPU, 1)
    assert key != reuse_key(SPEC, "abd", CPU, 1)
    assert key != reuse_key(SPEC, "abc", CPU, 2)
    other = RunSpec(**{**SPEC.__dict__, "epochs": 3})
    assert key != reuse_key(other, "abc", CPU, 1)
    assert len(code_fingerprint()) == 64


def test_run_job_reuses_finished_runs_and_retrains_on_request(tmp_path):
    spec = synthetic.DatasetSpec(
        name="d", kind="lowrank", in_features=8, out_features=6, n_train=64,
                          n_val=16, noise_std=0.1, task_rank=2)  # fmt: skip
    data = synthetic.generate(spec)
    files = {"d": (tmp_path / "d.safetensors", tmp_path / "d.json")}
    storage.save(data, *files["d"])
    args = ([SPEC.as_dict()], files, tmp_path / "runs", tmp_path / "jobs" / "a.json")
    assert run_job(*args, progress=False) == {"trained": 1, "reused": 0}
    metrics = tmp_path / "runs" / SPEC.run_id / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    assert run_job(*args, progress=False) == {"trained": 0, "reused": 1}
    assert metrics.stat().st_mtime_ns == stamp
    assert run_job(*args, reuse=False, progress=False) == {"trained": 1, "reused": 0}
    assert not list((tmp_path / "runs").glob(".*")), "temporary folders left behind"
