"""The stage loop: one process runs the whole task sequence.

evaluate (the zero-shot row) -> for each stage: method prepares -> train -> method finishes
-> evaluate everything -> log -> checkpoint. ``resume=true`` continues after the last
completed stage of the same run folder and ends with the same metrics as an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
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
from .results import accuracy_matrix, run_summary, stage_end_rows
from .packing import packed_device, release_slots
from .preemption import StopRequest
from .tracking import RunTracker
from .trainer import StageTraining, TrainSettings, set_train_mode

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stage_seed(seed: int, stage_index: int) -> int:
    """Each stage reseeds from (seed, stage): a resumed run draws exactly what an uninterrupted one would."""
    return seed * 1000 + stage_index + 1


def build_probes(builders, clip) -> list:
    """``eval.probes`` maps names to builders; each returns one probe or a list of them."""
    probes = []
    for builder in (builders or {}).values():
        if builder is None:
            continue
        built = instantiate(builder, clip=clip)
        probes.extend(built if isinstance(built, (list, tuple)) else [built])
    return probes


def record_job(run_dir: Path, **fields) -> None:
    """Where and when this job ran (one file per run folder; a requeued job appends an attempt)."""
    path = run_dir / "job.json"
    attempts = json.loads(path.read_text()) if path.exists() else []
    if "ended" in fields and attempts:
        attempts[-1].update(fields)
    else:
        attempts.append({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                         "slurm_job_id": os.environ.get("SLURM_JOB_ID"), **fields})
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(attempts, indent=2))


def build_tracker(cfg: DictConfig, run_dir: Path, resume: bool) -> RunTracker:
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
        resume=resume,
    )


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the configured task sequence; returns the run summary (also written to ``run_dir``)."""
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    if cfg.trainer.device == "pack":
        device = packed_device(Path(cfg.paths.cache_dir) / "device_slots")
    else:
        device = resolve_device(cfg.trainer.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    seed_everything(cfg.seed)
    log.info("run folder %s | device %s | precision %s", run_dir, device, precision)
    record_job(run_dir, device=str(device), threads=torch.get_num_threads())

    clip = instantiate(cfg.model, device=device)
    stages = instantiate(cfg.tasks, clip=clip)
    probes = build_probes(cfg.eval.get("probes"), clip)
    method: Method = instantiate(cfg.method, _convert_="all")
    evaluator = Evaluator(
        stages, probes, clip.tokenizer, device, precision,
        batch_size=cfg.eval.batch_size, num_workers=cfg.trainer.num_workers, task_head=cfg.eval.task_head,
        balanced=cfg.eval.balanced,
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
    resume = bool(cfg.resume) or checkpoint.requeued()
    stop = StopRequest()
    every = cfg.trainer.checkpoint_every_steps

    def after_step(training: StageTraining) -> None:
        epoch, within = divmod(training.step, training.steps_per_epoch)
        if cfg.eval.every_epoch and within == 0 and training.step < training.total:
            row = {
                "stage": context.stage_index + training.step / training.total,  # fractional: inside the stage
                "stage_name": f"{context.stage.name} epoch {epoch}",
                "epoch": epoch,
                **evaluator(method.model_for_evaluation(context), context.stage_index),
            }
            tracker.log_eval(row)
            rows.append(row)
            set_train_mode(context.model, settings.freeze_bn)
        if stop.requested or (every and training.step % every == 0 and training.step < training.total):
            checkpoint.save(run_dir, _mid_stage_state(context, method, training, rows), checkpoint.MID_STAGE)
            if stop.requested:
                log.warning("checkpointed %s at step %d/%d", context.stage.name, training.step, training.total)
                stop.hand_over()

    try:
        with build_tracker(cfg, run_dir, resume) as tracker:
            rows, start, mid_stage = _restore_or_start(
                run_dir, resume, cfg.eval.before_first_stage, context, method, evaluator, tracker
            )
            for index in range(start, len(stages)):
                context.stage_index = index
                stage = stages[index]
                seed_everything(stage_seed(cfg.seed, index))
                method.begin_stage(context)
                train_stats = {}
                if method.trains:
                    training = StageTraining(
                        context, method, parameters, make_optimizer, make_scheduler, settings,
                        seed=stage_seed(cfg.seed, index),
                    )
                    if mid_stage is not None:
                        _apply_mid_stage(mid_stage, context, method, training)
                        mid_stage = None
                    train_stats = training.run(after_step)
                method.end_stage(context)
                row = {"stage": index + 1, "stage_name": stage.name, **evaluator(context.model, index + 1), **train_stats}
                tracker.log_eval(row)
                rows.append(row)
                log.info("after %s: %s", stage.name, _brief(row))
                if cfg.trainer.checkpoint:
                    checkpoint.save(run_dir, _stage_end_state(context, method, rows))
                    checkpoint.discard(run_dir, checkpoint.MID_STAGE)
                if stop.requested:
                    stop.hand_over()
                stop_after = cfg.trainer.stop_after_stage
                if stop_after and index + 1 >= stop_after and index + 1 < len(stages):
                    log.warning("trainer.stop_after_stage=%d: stopping; continue with resume=true.", stop_after)
                    return {"stopped_after_stage": index + 1}

            summary = run_summary(rows, stage_names, cfg.eval.get("primary_zero_shot"))
            tracker.log_matrix(accuracy_matrix(stage_end_rows(rows), stage_names))
            probes_png = plot_probes(rows, run_dir / "probes.png", title=f"{method.name} (seed {cfg.seed})")
            tracker.log_figure(probes_png, "probes")
            tracker.log_summary(summary)
    finally:
        stop.restore()
        release_slots()
        record_job(run_dir, ended=time.time())
    log.info("summary: %s", _brief(summary))
    return summary


def _stage_end_state(context: RunContext, method: Method, rows: list[dict]) -> dict:
    # The optimiser is rebuilt at every stage start, so a stage-end checkpoint needs no optimiser state.
    return {
        "completed_stages": context.stage_index + 1,
        "model": context.model.state_dict(),
        "method": method.state_dict(),
        "rows": list(rows),
    }


def _mid_stage_state(context: RunContext, method: Method, training: StageTraining, rows: list[dict]) -> dict:
    return {
        "stage_index": context.stage_index,
        "model": context.model.state_dict(),
        "method": method.state_dict(),
        "training": training.state_dict(),
        "rows": list(rows),
    }


def _apply_mid_stage(state: dict, context: RunContext, method: Method, training: StageTraining) -> None:
    context.model.load_state_dict(state["model"])
    method.load_state_dict(state["method"])
    training.load_state_dict(state["training"])
    log.info("resumed %s at step %d/%d", context.stage.name, training.step, training.total)


def _restore_or_start(run_dir, resume, before_first_stage, context, method, evaluator, tracker) -> tuple[list[dict], int, dict | None]:
    """Rows so far, the first stage to run, and the mid-stage state to apply to it (if any)."""
    stage_end = checkpoint.load(run_dir) if resume else None
    mid_stage = checkpoint.load(run_dir, checkpoint.MID_STAGE) if resume else None
    start, rows = 0, None
    if stage_end is not None:
        context.model.load_state_dict(stage_end["model"])
        method.load_state_dict(stage_end["method"])
        start, rows = stage_end["completed_stages"], list(stage_end["rows"])
        log.info("resumed after stage %d from %s", start, checkpoint.checkpoint_path(run_dir))
    if mid_stage is not None and mid_stage["stage_index"] != start:
        log.warning("ignoring a stale mid-stage checkpoint of stage %d", mid_stage["stage_index"] + 1)
        mid_stage = None
    if mid_stage is not None and rows is None:
        rows = list(mid_stage["rows"])
    if rows is not None:
        tracker.restore(rows)
        return rows, start, mid_stage
    if resume:
        log.warning("resume requested but %s has no checkpoint: starting from the beginning.", run_dir)
    rows = []
    if before_first_stage:
        row = {"stage": 0, "stage_name": "zero-shot", **evaluator(context.model, 0)}
        tracker.log_eval(row)
        rows.append(row)
        log.info("zero-shot: %s", _brief(row))
    return rows, 0, None


def _brief(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.1f}" for k, v in metrics.items() if isinstance(v, float) and "/" in k and "r5" not in k)
