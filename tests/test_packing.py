"""Packing a sweep on one machine: device slots, and two jobs really running in parallel."""

from __future__ import annotations

import json

from conftest import TEST_PRESET, run_cli

from clipcl_runner.packing import claim_slot, release_slots


def test_each_claim_gets_a_free_slot_until_released(tmp_path):
    try:
        assert claim_slot(tmp_path, slots=2) == 0
        assert claim_slot(tmp_path, slots=2) == 1  # slot 0 is held: the next job gets the other GPU
        release_slots()
        assert claim_slot(tmp_path, slots=2) == 0
    finally:
        release_slots()


def test_packed_sweep_runs_two_jobs_at_once(pretrained_test_clip, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        *TEST_PRESET,
        "logger=none",
        "method=finetune,lwf",
        "hydra/launcher=pack",
        "hydra.launcher.n_jobs=2",
        "trainer.device=pack",
        "trainer.threads=1",
        "tasks.num_stages=1",
        "tasks.epochs=1",
        f"hydra.sweep.dir={sweep}",
        f"paths.output_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [json.loads((sweep / name / "job.json").read_text())[-1] for name in ("0_finetune_s0", "1_lwf_s0")]
    assert jobs[0]["pid"] != jobs[1]["pid"] and all(job["threads"] == 1 for job in jobs)
    assert max(job["started"] for job in jobs) < min(job["ended"] for job in jobs)  # their lifetimes overlap
    assert all((sweep / name / "summary.json").exists() for name in ("0_finetune_s0", "1_lwf_s0"))
