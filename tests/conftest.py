"""Shared fixtures: offline everything, the test preset's config, and one pretrained tiny CLIP per machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import clipcl_runner  # noqa: F401  registers the config schema, conf/config.yaml's first default

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = str(REPO / "conf")
# The pretrained test-preset CLIP is cached here across test sessions (a clean clone pretrains once).
CACHE = Path(os.environ.get("CLIPCL_TEST_CACHE", REPO / ".cache"))
# torch's CPU thread count is process-global and changes float summation order: a run inside the test
# process must use the same count as a `clipcl` subprocess it is compared with (torch's default).
DEFAULT_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """Every test starts and ends with the thread count it found (an in-process run may set trainer.threads)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    """Tensors this small only make threads contend (10x slower on a busy 2-core machine); the module's
    tests run on one thread, and the next module starts from torch's default again."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(DEFAULT_THREADS)


@pytest.fixture(autouse=True, scope="session")
def offline_environment(tmp_path_factory):
    """No test may reach the network: W&B offline, Hugging Face hub offline, all W&B files in tmp."""
    wandb_home = tmp_path_factory.mktemp("wandb_home")
    settings = {
        "WANDB_MODE": "offline",
        "WANDB_ERROR_REPORTING": "false",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "CLIPCL_CACHE": str(CACHE),
    }
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        settings[name] = str(wandb_home / name.lower())
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    yield
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def compose_config(*overrides: str, output_dir: Path | None = None) -> DictConfig:
    """The composed config exactly as `clipcl` would see it (without the hydra node)."""
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(config_name="config", overrides=list(overrides))
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


TEST_PRESET = ("experiment=synthetic_test", "trainer.progress=false")


@pytest.fixture(scope="session")
def pretrained_test_clip() -> Path:
    """The test preset's pretrained checkpoint (pretrained on first use, ~1 min on 2 cores)."""
    from omegaconf import OmegaConf

    from clipcl_runner.synthetic_clip import ensure_checkpoint

    cfg = compose_config(*TEST_PRESET)
    return ensure_checkpoint(
        OmegaConf.to_container(cfg.model.pretrain, resolve=True), cfg.model.cache_dir, progress=False
    )


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`clipcl ARGS` in a subprocess from the repository root, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "clipcl_runner.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def tiny_run(part: str = "whole", train_logit_scale: bool = False, stages: int = 2):
    """A RunContext around a random-init tiny open_clip model with ``stages`` two-class stages."""
    import open_clip
    import torch

    from clipcl_runner.data.stages import Stage, TensorImages
    from clipcl_runner.methods.base import RunContext
    from clipcl_runner.models import register_model_configs

    register_model_configs()
    torch.manual_seed(0)
    name = "SynthCLIP-RN-Tiny"
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 2
    made = [
        Stage(f"T{i + 1}", [f"shape{i}a", f"shape{i}b"], TensorImages(images, labels), TensorImages(images, labels))
        for i in range(stages)
    ]
    return RunContext(
        model=open_clip.create_model(name),
        tokenizer=open_clip.get_tokenizer(name),
        device=torch.device("cpu"),
        stages=made,
        part=part,
        train_logit_scale=train_logit_scale,
    )
