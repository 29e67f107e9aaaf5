"""Every option of every config group composes, and bad choices fail at start with Hydra's options list."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONFIG_DIR, compose_config, run_cli
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

GROUPS = ["model", "method", "tasks", "eval", "reference", "trainer", "logger", "paths", "experiment"]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(group, option) for group in GROUPS for option in options(group)])
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
    assert (
        "part='both': must be one of ['whole', 'image', 'text']" in result.stderr and "Traceback" not in result.stderr
    )


# Each method's config defaults (what `clipcl method=<name>` builds, with no experiment).
METHOD_DEFAULTS = {
    "zeroshot": {},
    "finetune": {},
    "lwf": {"alpha": 1.0, "temperature": 2.0, "distill_classes": "seen"},
    "vr_lwf": {
        "alpha": 1.0,
        "temperature": 2.0,
        "num_texts": 100,
        "token_length": 8,
        "include_lwf": True,
        "lwf_from_stage": 1,
    },
    "geodl": {"alpha": 10.0, "subspace_dim": 128, "kernel": "exact", "text_classes": "seen", "null_space_dim": 60},
    "imm": {"alpha": 0.6},
    "rkr": {"rank": 4, "init": "linear", "layers": "blocks", "in_proj": False},
    "icarl": {"memory_size": 2000, "alpha": 1.0, "temperature": 2.0, "herding": "per_class"},
    "wise_ft": {"ratio": 0.5, "anchor": "zero_shot"},
    "zscl": {
        "we_every": 10,
        "temperature": 2.0,
        "image_weight": 1.0,
        "text_weight": 1.0,
        "num_ref_texts": None,
        "text_features": "teacher",
        "l2": 0.0,
        "we_timing": "multiples",
    },
    "lwf_vr": {"alpha": 1.0, "temperature": 2.0, "num_texts": 1000, "token_length": 10, "distill_transform": "train"},
    "zscl_lwf": {"alpha": 1.0, "temperature": 2.0, "distill_transform": "eval"},
    "joint": {},
}


def test_every_method_has_its_defaults_listed():
    assert sorted(METHOD_DEFAULTS) == options("method")


@pytest.mark.parametrize("name", sorted(METHOD_DEFAULTS))
def test_method_configs_instantiate_with_their_defaults(name):
    from hydra.utils import instantiate

    method = instantiate(compose_config(f"method={name}").method, _convert_="all")
    assert method.name == name and method.trains == (name != "zeroshot")
    for key, value in METHOD_DEFAULTS[name].items():
        assert getattr(method, key) == value, key
    assert instantiate(compose_config(f"method={name}", "method.name=x").method, _convert_="all").name == "x"


@pytest.mark.parametrize("experiment,weights,we_every", [("zscl_mtil", 1.0, 100), ("zscl_cil", 5.0, 10)])
def test_zscl_experiments_set_the_protocols_distillation_weights(experiment, weights, we_every):
    from hydra.utils import instantiate

    for name, keys in (("zscl", ("image_weight", "text_weight")), ("lwf_vr", ("alpha",))):
        method = instantiate(compose_config(f"experiment={experiment}", f"method={name}").method, _convert_="all")
        assert all(getattr(method, key) == weights for key in keys)
    zscl = instantiate(compose_config(f"experiment={experiment}", "method=zscl").method, _convert_="all")
    assert zscl.we_every == we_every
