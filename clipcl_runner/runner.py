"""The stage loop: one process runs the whole task sequence.

evaluate (the zero-shot row) -> for each stage: method prepares -> train -> method finishes
-> evaluate everything -> log -> checkpoint. ``resume=true`` continues after the last
completed stage of the same run folder and ends with the same metrics as an uninterrupted run.
"""
from __future__ import annotations

import logging
import random
from functools import partial
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import checkpoint
from .evaluation import Evaluator
from .methods.base import Method, RunContext
from .plots import plot_probes
from .precision import resolve_device, resolve_precision
from .results import accuracy_matrix, run_summary
from .tracking import RunTracker
from .trainer import TrainSettings, train_stage

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def stage_seed(seed: int, stage_index: int) -> int:
    """Each stage reseeds from (seed, stage): a resumed run draws exactly what an uninterrupted one would."""
    return seed * 1000 + stage_index + 1


def build_tracker(cfg: DictConfig, run_dir: Path) -> RunTracker:
    logger = cfg.logger
    return RunTracker(
        run_dir,
        config=OmegaConf.to_container(cfg, resolve=True),
        mode=logger.mode,
        project=logger.project,
        entity=logger.entity,
        group=logger.group,
        job_type=logger.job_type,
        name=logger.name,
        tags=list(logger.tags),
        wandb_dir=logger.dir,
        resume=cfg.resume,
    )


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the configured task sequence; returns the run summary (also written to ``run_dir``)."""
    device = resolve_device(cfg.trainer.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    seed_everything(cfg.seed)
    log.info("run folder %s | device %s | precision %s", run_dir, device, precision)

    clip = instantiate(cfg.model, device=device)
    stages = instantiate(cfg.tasks, clip=clip)
    probes = instantiate(cfg.eval.probes, clip=clip) if cfg.eval.get("probes") else []
    method: Method = instantiate(cfg.method, _convert_="all")
    evaluator = Evaluator(
        stages, probes, clip.tokenizer, device, precision,
        batch_size=cfg.eval.batch_size, num_workers=cfg.trainer.num_workers, task_head=cfg.eval.task_head,
    )
    context = RunContext(
        model=clip.model, tokenizer=clip.tokenizer, device=device, stages=stages,
        part=cfg.part, train_logit_scale=cfg.trainer.train_logit_scale,
    )
    parameters = method.setup(context)
    settings = TrainSettings(
        batch_size=cfg.trainer.batch_size, num_workers=cfg.trainer.num_workers, precision=precision,
        grad_clip_norm=cfg.trainer.grad_clip_norm, freeze_bn=cfg.trainer.freeze_bn, progress=cfg.trainer.progress,
    )
    make_optimizer = instantiate(cfg.trainer.optimizer)
    make_scheduler = instantiate(cfg.trainer.scheduler) if cfg.trainer.get("scheduler") else None
    stage_names = [stage.name for stage in stages]

    with build_tracker(cfg, run_dir) as tracker:
        rows, start = _restore_or_start(cfg, run_dir, context, method, evaluator, tracker)
        for index in range(start, len(stages)):
            context.stage_index = index
            stage = stages[index]
            generator = seed_everything(stage_seed(cfg.seed, index))
            method.begin_stage(context)
            train_stats = (
                train_stage(context, method, parameters, make_optimizer, make_scheduler, settings, generator)
                if method.trains else {}
            )
            method.end_stage(context)
            row = {"stage": index + 1, "stage_name": stage.name, **evaluator(context.model, index + 1), **train_stats}
            tracker.log_eval(row)
            rows.append(row)
            log.info("after %s: %s", stage.name, _brief(row))
            if cfg.trainer.checkpoint:
                checkpoint.save(run_dir, _state(context, method, rows))
            stop_after = cfg.trainer.stop_after_stage
            if stop_after and index + 1 >= stop_after and index + 1 < len(stages):
                log.warning("trainer.stop_after_stage=%d: stopping; continue with resume=true.", stop_after)
                return {"stopped_after_stage": index + 1}

        summary = run_summary(rows, stage_names, cfg.eval.get("primary_zero_shot"))
        tracker.log_matrix(accuracy_matrix(rows, stage_names))
        probes_png = plot_probes(rows, run_dir / "probes.png", title=f"{method.name} (seed {cfg.seed})")
        tracker.log_figure(probes_png, "probes")
        tracker.log_summary(summary)
    log.info("summary: %s", _brief(summary))
    return summary


def _state(context: RunContext, method: Method, rows: list[dict]) -> dict:
    # The optimiser is rebuilt at every stage start, so a stage-end checkpoint needs no optimiser state.
    return {
        "completed_stages": context.stage_index + 1,
        "model": context.model.state_dict(),
        "method": method.state_dict(),
        "rows": rows,
        "rng": checkpoint.rng_state(),
    }


def _restore_or_start(cfg, run_dir, context, method, evaluator, tracker) -> tuple[list[dict], int]:
    state = checkpoint.load(run_dir) if cfg.resume else None
    if state is not None:
        context.model.load_state_dict(state["model"])
        method.load_state_dict(state["method"])
        tracker.restore(state["rows"])
        log.info("resumed from %s after stage %d", checkpoint.checkpoint_path(run_dir), state["completed_stages"])
        return list(state["rows"]), state["completed_stages"]
    if cfg.resume:
        log.warning("resume=true but %s has no checkpoint: starting from the beginning.", run_dir)
    rows = []
    if cfg.eval.before_first_stage:
        row = {"stage": 0, "stage_name": "zero-shot", **evaluator(context.model, 0)}
        tracker.log_eval(row)
        rows.append(row)
        log.info("zero-shot: %s", _brief(row))
    return rows, 0


def _brief(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.1f}" for k, v in metrics.items() if isinstance(v, float) and "/" in k and "r5" not in k)
