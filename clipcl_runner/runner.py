"""The stage loop: one process runs the whole task sequence.

evaluate (the zero-shot row) -> for each stage: method prepares -> train -> method finishes
-> evaluate everything -> log -> checkpoint. ``resume=true`` (or a SLURM requeue) continues
from the run folder's checkpoints and ends with the same metrics as an uninterrupted run.
"""

from __future__ import annotations

import functools
import logging
import random
import signal
import sys
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import checkpoint, distributed, requeue, run_folder
from .config_checks import config_diff, identity

# open_clip imports timm, whose utils import wandb when it is installed (~1.5 s, and logger=none must
# never load it): hide wandb while they load; timm then simply runs without it. RunTracker imports
# wandb itself when a run logs to W&B.
_hide_wandb = "wandb" not in sys.modules
if _hide_wandb:
    sys.modules["wandb"] = None  # type: ignore[assignment]  # `import wandb` now raises ImportError
try:
    from .evaluation import Evaluator
    from .methods.base import Method, RunContext, check_supported
finally:
    if _hide_wandb:
        del sys.modules["wandb"]
# The rest is imported after open_clip (above, with wandb hidden), hence the noqa: E402 marks.
from . import metric_names  # noqa: E402
from .packing import packed_device, release_slots  # noqa: E402
from .precision import resolve_device, resolve_precision  # noqa: E402
from .preemption import StopRequest  # noqa: E402
from .run_summary import accuracy_matrix, run_summary, stage_end_rows  # noqa: E402
from .tracking import RunTracker, SilentTracker  # noqa: E402
from .trainer import LOG_EVERY, StageTraining, set_train_mode, train_settings  # noqa: E402

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
    probes: list = []
    for builder in (builders or {}).values():
        if builder is not None:
            built = instantiate(builder, clip=clip)
            probes.extend(built if isinstance(built, (list, tuple)) else [built])
    return probes


def record_job(run_dir: Path, **fields) -> None:
    """Where and when this job ran (one file per run folder; a requeued job appends an attempt)."""
    path = run_dir / run_folder.JOB
    attempts = run_folder.read_json(path, default=[])
    if "ended" in fields and attempts:
        attempts[-1].update(fields)
    else:  # the scheduler's job id as sacct shows it (<array job>_<task> for an array task)
        attempts.append({**run_folder.holder_record(), **requeue.job_fields(), **fields})
    run_folder.write_json(path, attempts, indent=2)


def keep_checkpoints(cfg: DictConfig) -> str:
    """``trainer.keep_checkpoints``: what a finished run keeps of its stage-end checkpoints. ``none`` (default):
    deleted once summary.json is written (resume works until then); ``last``: ``last.pt`` stays (to
    evaluate or fine-tune the final model later); ``all``: also a copy per stage (``stage_<k>.pt``).
    The schema (config_schema.KeepCheckpoints) refuses any other value while Hydra composes."""
    return str(cfg.trainer.keep_checkpoints)


def keep_stage_copy(run_dir: Path, stage: int) -> Path:
    """``checkpoints/stage_<k>.pt``: the stage-end checkpoint as it is now (a hard link where the disk allows)."""
    import os
    import shutil

    source = checkpoint.checkpoint_path(run_dir)
    target = checkpoint.checkpoint_path(run_dir, f"stage_{stage}.pt")
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)  # last.pt is replaced (renamed over) at the next stage, so the link stays this stage's
    except OSError:
        shutil.copy2(source, target)
    return target


def stored_identity(run_dir: Path) -> dict | None:
    """The identity config the run folder's newest checkpoint was written under (None: no checkpoint)."""
    for name in (checkpoint.STAGE_END, checkpoint.MID_STAGE):
        path = run_folder.checkpoint_path(run_dir, name)
        if path.is_file():
            return checkpoint.load_file(path, mmap=True).get("config", {})
    return None


def prepare_run_folder(cfg: DictConfig, run_dir: Path, record: dict[str, str] | None, requeued: bool = False) -> None:
    """Refuse what would mix two runs in one folder, then write the config files (we hold the lock).

    A new run refuses a folder holding a run unless ``overwrite=true``; a resume refuses a config
    whose identity (config_checks.identity) differs from the checkpoint's unless
    ``resume_allow_config_change=true``.
    """
    resume = bool(cfg.resume) or checkpoint.requeued() or requeued
    existing = run_folder.previous_run(run_dir)
    if existing and not resume:
        if not cfg.get("overwrite", False):
            raise run_folder.existing_run_error(run_dir, existing)
        log.warning("overwrite=true: deleting the results and checkpoints of the earlier run in %s", run_dir)
        run_folder.clear_results(run_dir)
    if resume:
        stored = stored_identity(run_dir)
        differences = config_diff(stored, identity(cfg)) if stored else []
        if differences and not cfg.get("resume_allow_config_change", False):
            raise run_folder.changed_config_error(run_dir, differences)
        if differences:
            log.warning("resume_allow_config_change=true: resuming despite %s", "; ".join(differences))
    for name, text in (record or {}).items():
        run_folder.atomic_write(run_dir / name, text)


def stage_series(rows: list[dict], stage_names: list[str], primary_zero_shot: str | None = None) -> dict:
    """The run's CL summary so far (``run_summary.run_summary`` of the rows up to now) as W&B series
    ``cl/<key>``: UT-Acc, BWT, forgetting, Transfer, Avg, Last, A-Acc, CIL Avg/Last and each probe's
    ``delta/`` vs zero-shot (the probes' own values are already in the row)."""
    summary = run_summary(rows, stage_names, primary_zero_shot)
    return {
        metric_names.cl_series(key): value
        for key, value in summary.items()
        if key != "stages" and (metric_names.is_scalar(key) or metric_names.is_delta(key))
    }


def wandb_fields(cfg: DictConfig) -> tuple[dict, list[str]]:
    """W&B config fields (preset, task sequence, swept overrides; ``clipcl`` fills ``logger.fields``
    from Hydra) and the tags every run gets, plus the config's own ``logger.tags``."""
    from .run_names import run_tags  # light: omegaconf only

    given = cast(dict, OmegaConf.to_container(cfg.logger.fields, resolve=True)) if cfg.logger.get("fields") else {}
    fields = {"preset": "none", "task_sequence": "none", "swept": {}, **given, "method": cfg.method.name}
    tags = list(dict.fromkeys([*(str(tag) for tag in cfg.logger.tags), *run_tags(fields)]))
    return fields, tags


def build_tracker(cfg: DictConfig, run_dir: Path, resume: bool, stage_names: list[str]) -> RunTracker | SilentTracker:
    if not distributed.world().is_main:
        return SilentTracker()
    logger = cfg.logger
    fields, tags = wandb_fields(cfg)
    resolved = cast(dict, OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))  # choices as plain strings
    config = {**resolved, **{k: v for k, v in fields.items() if k != "method"}}
    series = functools.partial(
        stage_series, stage_names=stage_names, primary_zero_shot=cfg.eval.get("primary_zero_shot")
    )
    return RunTracker(
        run_dir,
        config=config,
        mode=logger.mode,
        project=logger.project,
        entity=logger.entity,
        group=logger.group,
        job_type=logger.job_type,
        name=logger.name,
        tags=tags,
        wandb_dir=logger.dir,
        resume=resume,
        stage_series=series,
        system_stats=bool(logger.get("system_stats", False)),
        console=bool(logger.get("console", False)),
    )


def run(cfg: DictConfig, run_dir: Path, record: dict[str, str] | None = None) -> dict:
    """Run the configured task sequence; returns the run summary (also written to ``run_dir``).

    Rank 0 holds the run folder's lock for the whole run and is its only writer; ``record`` maps
    file names (the ``.hydra`` config files) to the text written once the folder is ours.
    """
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    world = distributed.init_distributed(cfg.trainer.device)
    if world.distributed:  # one run folder: rank 0's (Hydra names a folder per process by its clock)
        run_dir = Path(distributed.broadcast_object(str(run_dir)))
    lock = run_folder.RunLock(run_dir)
    try:
        refusal = None
        requeued = False
        if world.is_main:
            try:
                lock.acquire()
                requeued = requeue.requeued(run_dir)  # before this attempt is recorded in job.json
                if requeued:
                    log.warning("a requeued attempt of job %s: resuming %s", requeue.job_id(), run_dir)
                prepare_run_folder(cfg, run_dir, record, requeued)
            except run_folder.RunFolderError as error:
                refusal = error
        if world.distributed:  # every rank stops when rank 0 refuses the folder
            message = distributed.broadcast_object(str(refusal) if refusal else None)
            refusal = refusal or (run_folder.RunFolderError(message) if message else None)
        if refusal is not None:
            raise refusal
        if world.distributed:
            device = distributed.device_for(world, resolve_device(cfg.trainer.device))
        elif cfg.trainer.device == "pack":
            device = packed_device(Path(cfg.paths.cache_dir) / "device_slots")
        else:
            device = resolve_device(cfg.trainer.device)
        if world.is_main:
            record_job(run_dir, device=str(device), threads=torch.get_num_threads(), world_size=world.size)
        try:
            return StageLoop(cfg, run_dir, device, requeued=requeued).run()
        finally:
            if world.is_main:
                try:
                    record_job(run_dir, ended=time.time())
                except run_folder.RunFolderError as error:  # e.g. the disk filled up: keep the first error
                    log.warning("%s", error)
    finally:
        release_slots()
        lock.release()
        distributed.shutdown()


class StageLoop:
    """One run: the model, task sequence, probes and method built from the config, and the loop over stages."""

    def __init__(self, cfg: DictConfig, run_dir: Path, device: torch.device, requeued: bool = False):
        self.cfg, self.run_dir = cfg, run_dir
        precision = resolve_precision(cfg.trainer.precision, device)
        seed_everything(cfg.seed)
        log.info("run folder %s | device %s | precision %s", run_dir, device, precision)
        if device.type == "cuda":  # TF32 matmuls/convolutions for whatever still runs in fp32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(cfg.trainer.tf32)
        clip = instantiate(cfg.model, device=device)
        if cfg.trainer.channels_last:
            clip.model.to(memory_format=torch.channels_last)
        self.stages = instantiate(cfg.tasks, clip=clip)
        self.method: Method = instantiate(cfg.method, _convert_="all")
        check_supported(self.method, cfg, distributed=distributed.world().distributed)  # refuse before any stage
        self.evaluator = Evaluator(
            self.stages,
            build_probes(cfg.eval.get("probes"), clip),
            clip.tokenizer,
            device,
            precision,
            batch_size=cfg.eval.batch_size,
            num_workers=cfg.trainer.num_workers,
            task_head=cfg.eval.task_head,
            balanced=cfg.eval.balanced,
            decoded_cache=cfg.eval.decoded_cache,
            retrieval_ties=cfg.eval.get("retrieval_ties", "official"),
            eval_precision=cfg.eval.get("precision", "auto"),
        )
        self.context = RunContext(
            model=clip.model,
            tokenizer=clip.tokenizer,
            device=device,
            stages=self.stages,
            part=cfg.part,
            train_logit_scale=cfg.trainer.train_logit_scale,
            train_head=cfg.trainer.train_head,
            label_smoothing=cfg.trainer.label_smoothing,
            clip=clip,
            precision=precision,
            teacher_precision=cfg.trainer.get("teacher_precision", "auto"),
        )
        self.parameters = self.method.setup(self.context)  # after this, the model may be wrapped (RKR)
        self.settings = train_settings(cfg.trainer, precision)
        self.make_optimizer = instantiate(cfg.trainer.optimizer)
        self.make_scheduler = instantiate(cfg.trainer.scheduler) if cfg.trainer.get("scheduler") else None
        self.world = distributed.world()
        self.main = self.world.is_main
        self.resume = bool(cfg.resume) or checkpoint.requeued() or requeued
        self.identity = identity(cfg)  # stored in every checkpoint: a resume must match it
        self.stop = StopRequest()
        self.rows: list[dict] = []
        self.tracker: RunTracker | None = None
        self.train_window: tuple[int, dict] = (0, {})  # (step, loss sums) at the last training-curve point
        self.keep = keep_checkpoints(cfg)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> dict:
        cfg, context = self.cfg, self.context
        try:  # the finally gives the stop signals back to their previous handlers on every way out
            if self.stop.signum is not None:  # a stop during start-up (preemption.catch_early_stops)
                name = signal.Signals(self.stop.signum).name
                log.warning("stopped on %s: it came during start-up, before this attempt did any work", name)
                raise SystemExit(128 + self.stop.signum)
            finished = self.finished_summary()
            if finished is not None:
                return finished
            names = [stage.name for stage in self.stages]
            with build_tracker(cfg, self.run_dir, self.resume, names) as self.tracker:
                start, mid_stage = self.restore_or_start()
                for index in range(start, len(self.stages)):
                    context.stage_index = index
                    seed_everything(stage_seed(cfg.seed, index))
                    self.method.begin_stage(context)
                    context.train_stage = self.method.training_stage(context)
                    train_stats = self.train(mid_stage if mid_stage and mid_stage["stage_index"] == index else None)
                    self.method.end_stage(context)
                    self.log_row(index + 1, context.stage.name, self.evaluator(context.model, index + 1), train_stats)
                    if cfg.trainer.checkpoint and self.main:
                        checkpoint.save(self.run_dir, self.stage_end_state())
                        checkpoint.discard(self.run_dir, checkpoint.MID_STAGE)
                        if cfg.logger.get("log_checkpoints", False):
                            self.tracker.log_checkpoint(checkpoint.checkpoint_path(self.run_dir), index + 1)
                        if self.keep == "all":
                            keep_stage_copy(self.run_dir, index + 1)
                    if distributed.any_rank(self.stop.requested):
                        self.stop.hand_over()
                    stop_after = cfg.trainer.stop_after_stage
                    if stop_after and stop_after <= index + 1 < len(self.stages):
                        log.warning("trainer.stop_after_stage=%d: stopping; continue with resume=true.", stop_after)
                        return {"stopped_after_stage": index + 1}
                return self.finish()
        finally:
            self.stop.restore()

    def train(self, mid_stage: dict | None) -> dict:
        if not self.method.trains or self.context.train_stage is None:
            return {}
        training = StageTraining(
            self.context,
            self.method,
            self.parameters,
            self.make_optimizer,
            self.make_scheduler,
            self.settings,
            seed=stage_seed(self.cfg.seed, self.context.stage_index),
        )
        if mid_stage is not None:
            self.context.model.load_state_dict(mid_stage["model"])
            self.method.load_state_dict(mid_stage["method"])
            training.load_state_dict(mid_stage["training"])
            log.info("resumed %s at step %d/%d", self.context.stage.name, training.step, training.total)
        self.train_window = (training.step, {key: float(value) for key, value in training.sums.items()})
        return training.run(self.after_step)

    def steps_before_stage(self) -> int:
        """Optimiser steps of the stages already trained (their stage-end rows' ``train/steps``)."""
        return sum(int(row.get("train/steps", 0)) for row in stage_end_rows(self.rows))

    def log_train_curves(self, training: StageTraining) -> None:
        """Mean loss terms since the last point and the LR, against the run's optimiser step (W&B only)."""
        start, sums = self.train_window
        now = {key: float(value) for key, value in training.sums.items()}  # a host sync: every N steps only
        steps = max(1, training.step - start)
        values = {key: (value - sums.get(key, 0.0)) / steps for key, value in now.items()}
        values["lr"] = float(training.optimizer.param_groups[0]["lr"])
        values["epoch"] = training.step / training.steps_per_epoch
        self.train_window = (training.step, now)
        self.tracker.log_train(self.steps_before_stage() + training.step, values)

    def after_step(self, training: StageTraining) -> None:
        """Training curves (every ``logger.log_every_steps``), per-epoch evaluation (OST) and mid-stage
        checkpoints, at a step boundary."""
        every_log = self.cfg.logger.get("log_every_steps", 10)
        if (
            every_log
            and self.main
            and getattr(self.tracker, "wandb_active", False)
            and (training.step % every_log == 0 or training.step == training.total)
        ):
            self.log_train_curves(training)
        epoch, within = divmod(training.step, training.steps_per_epoch)
        inside = training.step < training.total  # the stage's last step is evaluated as the stage end
        if self.cfg.eval.every_epoch and within == 0 and inside:
            context = self.context
            metrics = self.evaluator(self.method.model_for_evaluation(context), context.stage_index)
            stage = context.stage_index + training.step / training.total  # fractional: inside the stage
            self.log_row(stage, f"{context.stage.name} epoch {epoch}", metrics, {"epoch": epoch})
            set_train_mode(context.model, self.settings.freeze_bn)
        every = self.cfg.trainer.checkpoint_every_steps
        stop = self.stop.requested
        if self.world.distributed:  # agree on a stop at the same step (checked where the host syncs anyway)
            stop = distributed.any_rank(stop) if training.step % LOG_EVERY == 0 else False
        if stop or (every and inside and training.step % every == 0):
            if self.main:
                checkpoint.save(self.run_dir, self.mid_stage_state(training), checkpoint.MID_STAGE)
            distributed.barrier()
            if stop:
                log.warning("checkpointed %s at step %d/%d", self.context.stage.name, training.step, training.total)
                self.stop.hand_over()

    def log_row(self, stage: float, name: str, metrics: dict, extra: dict | None = None) -> None:
        row = {"stage": stage, "stage_name": name, **metrics, **(extra or {})}
        self.tracker.log_eval(row)
        self.rows.append(row)
        log.info("%s: %s", name, _brief(row))

    def finish(self) -> dict:
        names = [stage.name for stage in self.stages]
        summary = run_summary(self.rows, names, self.cfg.eval.get("primary_zero_shot"))
        # the eval protocol's choice for the report: its table's columns and its figure's metric over stages
        summary[metric_names.HEADLINE] = [str(key) for key in self.cfg.eval.get("headline") or ()]
        if self.cfg.eval.get("plot_metric"):  # none: the report picks one
            summary[metric_names.PLOT_METRIC] = str(self.cfg.eval.plot_metric)
        missing = [key for key in summary[metric_names.HEADLINE] if key not in summary]
        if missing:  # e.g. a delta without the zero-shot row (eval.before_first_stage=false)
            log.warning("eval.headline: %s not in this run's summary; the report leaves them out", missing)
        # which run: the W&B name (method-s<seed> and the run's swept options)
        title = f"accuracy matrix: {self.cfg.logger.get('name') or f'{self.method.name}-s{self.cfg.seed}'}"
        self.tracker.log_matrix(accuracy_matrix(stage_end_rows(self.rows), names), title=title)
        if self.main:
            from .plots import plot_probes  # matplotlib only where a figure is drawn

            title, path = f"{self.method.name} (seed {self.cfg.seed})", self.run_dir / run_folder.PROBES_PNG
            try:
                self.tracker.log_figure(plot_probes(self.rows, path, title=title), "probes")
            except OSError as error:  # a figure is a view of metrics.jsonl: never lose the summary over it
                log.warning("could not write %s: %s", path, error)
        self.tracker.log_summary(summary)
        log.info("summary: %s", _brief(summary, headline=summary.get(metric_names.HEADLINE) or DEFAULT_HEADLINE))
        if self.main and self.keep == "none":  # the summary is written: the run needs no checkpoint to resume
            checkpoint.discard(self.run_dir, checkpoint.STAGE_END)
            checkpoint.discard(self.run_dir, checkpoint.MID_STAGE)
        return summary

    # -- checkpoints --------------------------------------------------------------------------
    def finished_summary(self) -> dict | None:
        """A resume of a run that finished and dropped its checkpoints (``trainer.keep_checkpoints=none``)
        has nothing left to do: its summary, rather than a second run from the start."""
        if not self.resume or run_folder.checkpoint_path(self.run_dir, checkpoint.STAGE_END).is_file():
            return None
        if run_folder.checkpoint_path(self.run_dir, checkpoint.MID_STAGE).is_file():
            return None
        summary = run_folder.read_json(self.run_dir / run_folder.SUMMARY, default=None)
        if summary is not None:
            log.warning(
                "%s already finished (summary.json; its checkpoints were dropped at the end): nothing to "
                "resume. Start a new run folder, or overwrite=true to run it again.",
                self.run_dir,
            )
        return summary

    def stage_end_state(self) -> dict:
        # The optimiser is rebuilt at every stage start, so a stage-end checkpoint needs no optimiser state.
        return {
            "completed_stages": self.context.stage_index + 1,
            "config": self.identity,
            "model": self.context.model.state_dict(),
            "method": self.method.state_dict(),
            "rows": list(self.rows),
        }

    def mid_stage_state(self, training: StageTraining) -> dict:
        return {
            "stage_index": self.context.stage_index,
            "config": self.identity,
            "model": self.context.model.state_dict(),
            "method": self.method.state_dict(),
            "training": training.state_dict(),
            "rows": list(self.rows),
        }

    def restore_or_start(self) -> tuple[int, dict | None]:
        """Restore rows and model from the checkpoints (when resuming); return the first stage and its mid-stage state.

        The stage-end checkpoint gives the model at the start of the interrupted stage, so
        ``begin_stage`` prepares it exactly as the first time (a teacher is that model again);
        the mid-stage checkpoint is applied on top once the stage is prepared.
        """
        stage_end = checkpoint.load(self.run_dir) if self.resume else None
        mid_stage = checkpoint.load(self.run_dir, checkpoint.MID_STAGE) if self.resume else None
        start = 0
        if stage_end is not None:
            self.context.model.load_state_dict(stage_end["model"])
            self.method.load_state_dict(stage_end["method"])
            start, self.rows = stage_end["completed_stages"], list(stage_end["rows"])
            log.info("resumed after stage %d from %s", start, checkpoint.checkpoint_path(self.run_dir))
        if mid_stage is not None and mid_stage["stage_index"] != start:
            log.warning("ignoring a stale mid-stage checkpoint of stage %d", mid_stage["stage_index"] + 1)
            mid_stage = None
        if mid_stage is not None and stage_end is None:
            self.rows = list(mid_stage["rows"])
        if stage_end is not None or mid_stage is not None:
            self.tracker.restore(self.rows)
            return start, mid_stage
        if self.resume:
            log.warning("resume requested but %s has no checkpoint: starting from the beginning.", self.run_dir)
            self.tracker.restore([])  # the rows of the attempt that died before its first checkpoint go
        if self.cfg.eval.before_first_stage:
            self.log_row(0, "zero-shot", self.evaluator(self.context.model, 0))
        return 0, None


DEFAULT_HEADLINE = ("ut_acc", "bwt", "forgetting")  # the summary line's first numbers without eval.headline


def _brief(metrics: dict, headline: tuple[str, ...] | list[str] = ()) -> str:
    """The log line's numbers: the ``headline`` keys first, then every ``a/b`` metric but R@5, with 4
    significant digits (``train/lwf=0.0003`` shows a small but active loss term, 61.25 stays 61.25)."""
    keys = list(dict.fromkeys(k for k in headline if k in metrics))
    keys += [k for k in metrics if k not in keys and not metric_names.is_scalar(k) and metric_names.recall_k(k) != 5]
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in keys if isinstance(metrics[k], float))
