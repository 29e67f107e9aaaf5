"""Console entry points: ``clipcl`` (one run, or a sweep with ``-m``) and ``clipcl-pretrain``."""
from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from .evaluation import TASK_HEADS
from .models import PARTS
from .precision import PRECISIONS

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def validate(cfg: DictConfig) -> None:
    """Fail at start, not deep inside training, on values Hydra's schema cannot check."""
    choices = {"part": (cfg.part, PARTS), "trainer.precision": (cfg.trainer.precision, PRECISIONS),
               "eval.task_head": (cfg.eval.task_head, TASK_HEADS)}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{key}={value!r} is not one of {list(allowed)}.")


def fill_run_identity(cfg: DictConfig) -> None:
    """W&B group = the sweep (its folder name) and name = method, seed and the run's other overrides,
    unless the config sets them."""
    from .report import is_ignored_override, parse_overrides

    hydra_cfg = HydraConfig.get()
    with open_dict(cfg):
        if cfg.logger.group is None and hydra_cfg.mode == RunMode.MULTIRUN:
            cfg.logger.group = Path(hydra_cfg.sweep.dir).name
        if cfg.logger.name == f"{cfg.method.name}-s{cfg.seed}":
            overrides = parse_overrides(hydra_cfg.overrides.task)
            extra = [f"{key}={value}" for key, value in overrides.items()
                     if not is_ignored_override(key) and key != "experiment"]
            cfg.logger.name = " ".join([cfg.logger.name, *extra])


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> dict | None:
    from .runner import run  # torch and open_clip load only once the config is known to be valid

    validate(cfg)
    fill_run_identity(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = run(cfg, run_dir)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def pretrain_main(cfg: DictConfig) -> None:
    """Pretrain (or find in the cache) the synthetic CLIP of ``model=synthetic`` and print its path."""
    from .synthetic_clip import ensure_checkpoint

    if "pretrain" not in cfg.model:
        raise ValueError(f"model={HydraConfig.get().runtime.choices.model} has nothing to pretrain; use model=synthetic.")
    path = ensure_checkpoint(
        OmegaConf.to_container(cfg.model.pretrain, resolve=True), cfg.model.cache_dir, progress=cfg.trainer.progress
    )
    print(path)


if __name__ == "__main__":
    main()
