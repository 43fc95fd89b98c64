"""Reuse keys: a finished run is reused only for the same settings, data, code and threads."""

import shutil

import pytest
import torch

from lorasweep.io import load_metadata, load_tensors, read_json, tensors_to_bytes
from lorasweep.jobs.integrity import plan_mismatch
from lorasweep.jobs.job import run_job
from lorasweep.jobs.reuse import (
    PACKAGE,
    code_fingerprint,
    reuse_key,
    reuse_parts,
    training_sources,
    what_changed,
)
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


NUMERICS_EDITS = {
    "chunk elements": (
        "planning/cohorts.py",
        "CHUNK_ELEMENTS = 1 << 16",
        "CHUNK_ELEMENTS = 1 << 15",
    ),
    "slot alignment": ("planning/cohorts.py", "ALIGN = 64", "ALIGN = 32"),
    "rows per chunk": (
        "planning/cohorts.py",
        "return max(1, CHUNK_ELEMENTS",
        "return max(2, CHUNK_ELEMENTS",
    ),
    "adam eps": ("training/stacked.py", "EPS = 1e-8", "EPS = 1e-7"),
    "adam betas": ("training/stacked.py", "BETAS = (0.9, 0.999)", "BETAS = (0.9, 0.99)"),
}
LAYOUT_EDITS = {
    "module docstring": (
        "planning/cohorts.py",
        '"""Group runs into cohorts',
        '"""Put runs into cohorts',
    ),
    "constant docstring": (
        "planning/cohorts.py",
        "Methods the engine batches, on every",
        "Methods that the engine batches, on every",
    ),
    "function docstring": ("planning/cohorts.py", "The runs grouped into cohorts,", "Cohorts,"),
    "comment": ("training/exact.py", "\nSPLITS = ", "\n# the two splits\nSPLITS = "),
}


def edited_copy(tmp_path, path, old, new):
    """A copy of the package with ``old`` replaced by ``new`` once in ``path``."""
    copy = tmp_path / "lorasweep"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    text = (copy / path).read_text(encoding="utf-8")
    assert text.count(old) == 1, (path, old)
    (copy / path).write_text(text.replace(old, new), encoding="utf-8")
    return copy


def test_the_fingerprint_covers_what_training_imports_wherever_it_lives():
    covered = {p.relative_to(PACKAGE).as_posix() for p in training_sources()}
    assert {"planning/cohorts.py", "training/exact.py", "jobs/job.py"} <= covered
    assert not covered & {"figures/loss.py", "analysis/findings.py", "report/html.py"}


@pytest.mark.parametrize("edit", NUMERICS_EDITS, ids=list(NUMERICS_EDITS))
def test_editing_a_numerics_constant_changes_the_code_fingerprint(tmp_path, edit):
    assert code_fingerprint(edited_copy(tmp_path, *NUMERICS_EDITS[edit])) != code_fingerprint()


@pytest.mark.parametrize("edit", LAYOUT_EDITS, ids=list(LAYOUT_EDITS))
def test_editing_a_docstring_or_comment_keeps_the_code_fingerprint(tmp_path, edit):
    assert code_fingerprint(edited_copy(tmp_path, *LAYOUT_EDITS[edit])) == code_fingerprint()


def job_args(tmp_path, spec=SPEC):
    """run_job's arguments for ``spec`` on a small saved dataset."""
    dataset = synthetic.DatasetSpec(
        name="d", kind="lowrank", in_features=8, out_features=6, n_train=64,
                          n_val=16, noise_std=0.1, task_rank=2)  # fmt: skip
    files = {"d": (tmp_path / "d.safetensors", tmp_path / "d.json")}
    storage.save(synthetic.generate(dataset), *files["d"])
    return ([spec.as_dict()], files, tmp_path / "runs", tmp_path / "jobs" / "a.json")


def test_run_job_reuses_finished_runs_and_retrains_on_request(tmp_path):
    args = job_args(tmp_path)
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


def test_the_retraining_notice_names_what_changed(tmp_path, capsys):
    args = job_args(tmp_path)
    run_job(*args, progress=False)
    capsys.readouterr()
    assert run_job(*args, progress=False, engine="single") == {"trained": 1, "reused": 0}
    assert f"{SPEC.run_id}: retraining: changed: engine batched → single" in capsys.readouterr().out
    assert run_job(*args, progress=False, threads=2, engine="single")["trained"] == 1
    assert f"{SPEC.run_id}: retraining: changed: threads 1 → 2" in capsys.readouterr().out
    provenance = tmp_path / "runs" / SPEC.run_id / "provenance.json"
    recorded = read_json(provenance)
    recorded["reuse"]["device"] = "cuda"
    recorded["reuse"]["code"] = "0" * 64
    recorded["reuse_key"] = "0" * 64
    parts = reuse_parts(SPEC, recorded["reuse"]["dataset_sha256"], CPU, 2, "single")
    assert what_changed(recorded, parts) == "changed: training code, device cuda → cpu"
    del recorded["reuse"]
    assert what_changed(recorded, parts).startswith("reuse key recorded by an older version")


def test_auto_device_that_resolves_to_the_same_device_reuses(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("auto resolves to CUDA here")
    args = job_args(tmp_path)
    assert run_job(*args, progress=False) == {"trained": 1, "reused": 0}
    auto = RunSpec(**{**SPEC.__dict__, "device": "auto"})
    assert run_job([auto.as_dict()], *args[1:], progress=False) == {"trained": 0, "reused": 1}
    run_dir = tmp_path / "runs" / SPEC.run_id
    assert plan_mismatch(run_dir, auto.as_dict(), None) is None
    cuda = RunSpec(**{**SPEC.__dict__, "device": "cuda"})
    assert "trained on cpu" in plan_mismatch(run_dir, cuda.as_dict(), None)


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
