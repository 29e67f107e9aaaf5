"""Every option of every config group composes, and bad choices fail at start with Hydra's options list."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, compose_config, run_cli

GROUPS = ["model", "method", "tasks", "eval", "trainer", "logger", "paths", "experiment"]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(group, option) for group in GROUPS for option in options(group)]
)
def test_every_option_composes_and_resolves(group, option):
    cfg = compose_config(f"{group}={option}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["method"]["_target_"].startswith("clipcl_runner.methods.")
    assert resolved["part"] in ("whole", "image", "text")
    if group != "experiment":
        assert cfg[group] is not None


def test_default_is_the_synthetic_world():
    cfg = compose_config()
    assert cfg.model._target_.endswith("load_synthetic_clip")
    assert cfg.tasks._target_.endswith("synthetic_task_sequence")
    assert cfg.logger.mode == "offline"


def test_experiment_states_only_deltas():
    base, test = compose_config(), compose_config("experiment=synthetic_test")
    assert test.model.pretrain.num_images < base.model.pretrain.num_images
    assert test.model.pretrain.lr == base.model.pretrain.lr  # untouched keys stay the defaults


def test_unknown_group_option_fails_with_the_valid_options():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config("method=does_not_exist")
    message = str(error.value)
    assert "does_not_exist" in message and "finetune" in message and "vr_lwf" in message


def test_unknown_key_fails():
    with pytest.raises(ConfigCompositionException):
        compose_config("trainer.no_such_key=1")


def test_cli_unknown_method_fails_before_training(tmp_path):
    result = run_cli("method=nope", f"paths.output_dir={tmp_path}", timeout=120)
    assert result.returncode != 0
    assert "Could not find 'method/nope'" in result.stderr
    assert "Available options" in result.stderr and "vr_lwf" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.jsonl"))


def test_cli_bad_part_fails_before_loading_anything(tmp_path):
    result = run_cli("part=both", f"paths.output_dir={tmp_path}", timeout=120)
    assert result.returncode != 0
    assert "part='both' is not one of ['whole', 'image', 'text']" in result.stderr
