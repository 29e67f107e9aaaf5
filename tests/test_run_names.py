"""run_names: which overrides name and group a run, W&B fields and tags, the sweep folder's name."""

from __future__ import annotations

import subprocess
import sys

from conftest import CONFIG_DIR
from hydra import compose, initialize_config_dir

from clipcl_runner import run_names


def test_parse_overrides_keeps_strings_and_marks_deletions():
    assert run_names.parse_overrides(["method=lwf", "+method.alpha=0.5", "~x", "seed=1"]) == {
        "method": "lwf",
        "method.alpha": "0.5",
        "x": "~",
        "seed": "1",
    }


def test_overrides_that_do_not_change_results_are_ignored():
    for key in (
        "trainer.threads",
        "trainer.num_workers",
        "trainer.progress",
        "trainer.device",
        "resume",
        "paths.output_dir",
        "logger.mode",
        "logger/x",
        "hydra.sweep.dir",
        "seed",
        "method",
        "trainer.keep_checkpoints",
        "+trainer.threads",
    ):
        assert run_names.is_ignored_override(key), key
    for key in ("method.alpha", "part", "tasks.num_stages", "trainer.optimizer.lr", "experiment", "trainer.precision"):
        assert not run_names.is_ignored_override(key), key


def test_run_name_fields_and_tags():
    overrides = ["experiment=synthetic_test", "method=lwf", "method.alpha=0.5", "trainer.threads=2", "seed=3"]
    assert run_names.run_name("lwf", 3, overrides) == "lwf-s3 method.alpha=0.5"
    fields = run_names.run_fields({"experiment": "synthetic_test", "tasks": "synthetic"}, overrides, "lwf")
    assert fields == {
        "preset": "synthetic_test",
        "task_sequence": "synthetic",
        "method": "lwf",
        "swept": {"method.alpha": "0.5"},
    }
    assert run_names.run_tags(fields) == ["preset:synthetic_test", "tasks:synthetic", "method:lwf", "method.alpha=0.5"]
    assert run_names.run_fields({"experiment": None}, [], "finetune")["preset"] == "none"


def test_sweep_folder_is_named_by_the_preset_and_time():
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        named = compose(config_name="config", overrides=["experiment=sweep_methods"], return_hydra_config=True)
        plain = compose(config_name="config", return_hydra_config=True)
        named_dir, plain_dir = str(named.hydra.sweep.dir), str(plain.hydra.sweep.dir)
    assert named_dir.split("/")[-1].startswith("sweep_methods_20")
    assert plain_dir.split("/")[-1].startswith("sweep_20")
    assert run_names.sweep_name("a b/c") == "a_b_c"


def test_import_needs_no_pandas_or_torch():
    code = (
        "import sys, clipcl_runner.run_names, clipcl_runner.cli; "
        "print(sorted(m for m in ('pandas', 'torch', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
