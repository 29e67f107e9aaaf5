"""clipcl-preflight: a sweep's jobs listed, and everything it lacks reported at once, before any work."""

from __future__ import annotations

import pytest

from clipcl_runner.preflight import expand_jobs, main


def test_sweep_expands_like_hydras_basic_sweeper():
    jobs = expand_jobs(["method=finetune,lwf", "seed=0,1", "part=image"], multirun=True)
    assert jobs == [
        ["method=finetune", "seed=0", "part=image"],
        ["method=finetune", "seed=1", "part=image"],
        ["method=lwf", "seed=0", "part=image"],
        ["method=lwf", "seed=1", "part=image"],
    ]


def test_a_sweep_value_without_multirun_is_refused():
    with pytest.raises(SystemExit, match="method=finetune,lwf.*add -m"):
        expand_jobs(["method=finetune,lwf"], multirun=False)


def test_synthetic_sweep_is_ready_and_its_steps_are_counted(capsys):
    assert main(["-m", "experiment=synthetic_test", "method=finetune,zeroshot", "trainer.batch_size=50"]) == 0
    out = capsys.readouterr().out
    assert "2 jobs:" in out and "Everything this sweep needs is in place." in out
    rows = [line.split() for line in out.splitlines() if line.startswith("    ") and line.split()[0].isdigit()]
    steps = [int(row[-4].replace(",", "")) for row in rows]
    assert steps[0] > 0 and steps[1] == 0  # zeroshot trains nothing


def test_missing_weights_and_datasets_are_all_listed_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIPCL_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CLIPCL_CACHE", str(tmp_path / "cache"))
    assert main(["-m", "experiment=ding2022_mst", "method=finetune,lwf"]) == 1
    out = capsys.readouterr().out
    problems = out.split("Everything missing", 1)[1]
    for needed in ("Pretrained weights 'openai'", "Dataset 'coco'", "Dataset 'tiered_imagenet'", "Dataset 'flickr30k'"):
        assert needed in problems
    assert "[all jobs]" in problems and "\\n" not in problems  # grouped across jobs, real line breaks
    assert problems.count("Dataset 'flickr30k'") == 1


def test_a_bad_override_is_a_problem_of_its_job_not_a_crash(capsys):
    assert main(["-m", "method=finetune,nope", "experiment=synthetic_test"]) == 1
    out = capsys.readouterr().out
    assert "job 1" in out and "nope" in out and "job 0" not in out.split("Everything missing", 1)[1]
