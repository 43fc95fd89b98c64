"""Reuse keys: a finished run is reused only for the same settings, data, code and threads."""

import shutil

import torch

from lorasweep.io import load_metadata, load_tensors, read_json, tensors_to_bytes
from lorasweep.jobs import reuse
from lorasweep.jobs.job import run_job
from lorasweep.jobs.reuse import code_fingerprint, reuse_key
from lorasweep.planning.runs import RunSpec
from lorasweep.tasks import storage, synthetic
from lorasweep.training.loop import build_model

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
    assert key != reuse_key(SPEC, "abc", CPU, 1, engine="single")
    assert key == reuse_key(SPEC, "abc", CPU, 1, engine="batched")


def test_code_fingerprint_changes_when_training_code_changes(tmp_path, monkeypatch):
    package = tmp_path / "lorasweep"
    shutil.copytree(reuse.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(reuse, "PACKAGE", package)

    def fingerprint() -> str:
        code_fingerprint.cache_clear()
        return code_fingerprint()

    try:
        original = fingerprint()
        assert original == fingerprint(), "the same code gives the same fingerprint"
        report = package / "report" / "html.py"
        report.write_text(report.read_text() + "\nREPORT_ONLY = 1\n")
        assert fingerprint() == original, "code that cannot change a run's numbers is left out"
        loop = package / "training" / "loop.py"
        loop.write_text(loop.read_text() + "\nEXTRA_STEP_SCALE = 1.0\n")
        assert fingerprint() != original, "an edit to the training code must retrain"
    finally:
        code_fingerprint.cache_clear()


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
    assert read_json(metrics.parent / "provenance.json")["engine"] == "batched"
    assert run_job(*args, progress=False, engine="single") == {"trained": 1, "reused": 0}
    assert read_json(metrics.parent / "provenance.json")["engine"] == "single"
    assert run_job(*args, progress=False, engine="single") == {"trained": 0, "reused": 1}


def test_pissa_runs_store_the_adapters_starting_point(tmp_path):
    data = synthetic.generate(
        synthetic.DatasetSpec(name="d", kind="lowrank", in_features=8, out_features=6,
                              n_train=64, n_val=16, noise_std=0.1, task_rank=2)
    )  # fmt: skip
    files = {"d": (tmp_path / "d.safetensors", tmp_path / "d.json")}
    storage.save(data, *files["d"])
    specs = [RunSpec(**{**SPEC.__dict__, "init": init}) for init in ("kaiming", "pissa", "randn")]
    runs = tmp_path / "runs"
    run_job([s.as_dict() for s in specs], files, runs, tmp_path / "a.json", progress=False)
    for spec in specs:
        weights = runs / spec.run_id / "weights.safetensors"
        tensors, meta = load_tensors(weights), load_metadata(weights)
        trained = {k: tensors[k] for k in ("lora_A", "lora_B")}
        assert read_json(runs / spec.run_id / "metrics.json")["adapter_bytes"] == len(
            tensors_to_bytes(trained, meta)
        ), "the adapter's size leaves its starting point out"
        if spec.init != "pissa":
            assert set(tensors) == {"lora_A", "lora_B"}
            continue
        start = build_model(spec, data, CPU)
        assert torch.equal(tensors["lora_A_init"], start.lora_A.detach())
        assert torch.equal(tensors["lora_B_init"], start.lora_B.detach())
    pissa = load_tensors(runs / specs[1].run_id / "weights.safetensors")
    s = load_metadata(runs / specs[1].run_id / "weights.safetensors")["scaling"]
    u, sv, vh = torch.linalg.svd(data["W0"].double(), full_matrices=False)
    torch.testing.assert_close(
        s * (pissa["lora_B_init"] @ pissa["lora_A_init"]).double(),
        (u[:, :2] * sv[:2]) @ vh[:2],
        rtol=1e-5,
        atol=1e-6,
    )
