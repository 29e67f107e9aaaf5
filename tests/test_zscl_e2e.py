"""ZSCL's benchmarks end to end on tiny fake datasets in their real on-disk formats, with a small real
open_clip architecture at random init: a 3-dataset mini-MTIL and a 3-step mini-CIL."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import compose_config
from test_data_zscl import write_aircraft, write_cifar100, write_mnist

from clipcl_runner import metrics
from clipcl_runner.report import write_report
from clipcl_runner.runner import run

TINY_MODEL = ("model=open_clip", "model.name=SynthCLIP-RN-Tiny", "model.pretrained=null")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zscl_data")
    write_cifar100(root)
    write_mnist(root)
    write_aircraft(root)
    return root


def run_experiment(tmp_path: Path, data_root: Path, experiment: str, *overrides: str) -> Path:
    torch.set_num_threads(1)  # restored after the test (conftest.torch_threads_restored)
    cfg = compose_config(
        f"experiment={experiment}",
        *TINY_MODEL,
        f"paths.data_dir={data_root}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "reference=synthetic",
        "reference.num_images=16",
        "logger=none",
        "trainer.progress=false",
        "trainer.batch_size=8",
        "eval.batch_size=64",
        *overrides,
        output_dir=tmp_path,
    )
    run_dir = tmp_path / "run"
    run(cfg, run_dir)
    return run_dir


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["zscl", "lwf_vr"])
def test_mini_mtil_gives_the_matrix_and_transfer_avg_last(data_root, tmp_path, method):
    run_dir = run_experiment(
        tmp_path,
        data_root,
        "zscl_mtil",
        f"method={method}",
        "tasks.order=[aircraft,mnist,cifar100]",
        "tasks.iterations=3",
        "trainer.scheduler.warmup_steps=1",
        "method.num_texts=20" if method == "lwf_vr" else "method.we_every=2",
    )
    rows = rows_of(run_dir)
    assert [row["stage"] for row in rows] == [0, 1, 2, 3]  # the zero-shot row, then one per dataset
    matrix = pd.read_csv(run_dir / "accuracy_matrix.csv", index_col=0)
    assert list(matrix.columns) == ["aircraft", "mnist", "cifar100"] and len(matrix) == 4
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = metrics.mtil_summary(matrix.to_numpy(), has_zero_shot_row=True)
    for key in ("transfer", "avg", "last", "bwt", "forgetting", "zero_shot_transfer"):
        assert summary[key] == pytest.approx(expected[key], nan_ok=True), key
    assert rows[-1]["train/steps"] == 3 + 1  # ZSCL's closing lr-0 step (tasks.extra_steps=1)
    table = write_report([run_dir], tmp_path / "report")["table"]
    assert "| transfer | avg acc | last | BWT | forgetting |" in table  # MTIL's columns


def test_mini_cil_reports_accuracy_on_every_seen_class(data_root, tmp_path):
    run_dir = run_experiment(
        tmp_path,
        data_root,
        "zscl_cil",
        "method=icarl",
        "method.memory_size=20",
        "tasks.initial_classes=10",
        "tasks.increment=45",
    )
    rows = rows_of(run_dir)
    assert [row["stage"] for row in rows] == [1, 2, 3]  # CIL has no zero-shot row
    # ZSCL's steps per task: ceil(N/8) + 1 over the task's own N images (10 x 2, then 45 x 2; the exemplars
    # ride along): ceil(20/8) + 1 = 4, ceil(90/8) + 1 = 13
    assert [row["train/steps"] for row in rows] == [4, 13, 13]
    summary = json.loads((run_dir / "summary.json").read_text())
    steps = [row["cil/acc"] for row in rows]
    assert "| CIL avg | CIL last |" in write_report([run_dir], tmp_path / "report")["table"]
    assert summary["cil_avg"] == pytest.approx(sum(steps) / 3) and summary["cil_last"] == pytest.approx(steps[-1])
    # after step 2, every seen test image (10 + 45, one per class) is classified among the 55 seen classes
    after_two = rows[1]
    assert after_two["cil/acc"] == pytest.approx(
        (10 * after_two["task/cifar100_s1/acc"] + 45 * after_two["task/cifar100_s2/acc"]) / 55
    )


def test_missing_mtil_dataset_names_the_prepare_command(tmp_path):
    cfg = compose_config(
        "experiment=zscl_mtil",
        *TINY_MODEL,
        f"paths.data_dir={tmp_path / 'nothing'}",
        "logger=none",
        output_dir=tmp_path,
    )
    with pytest.raises(Exception) as error:
        run(cfg, tmp_path / "run")
    assert "scripts/prepare_data.py aircraft" in str(error.value)
