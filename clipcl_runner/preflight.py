"""``clipcl-preflight``: what a run or a sweep needs, checked all at once before anything is submitted.

Takes the same arguments as ``clipcl`` (``-m`` for a sweep), composes every job, and for each one
checks the model weights, every dataset the task sequence, the probes and the method's
reference set read, and the run folder's file system; it estimates the optimiser steps and the
disk a job's checkpoints take. Nothing is trained and no model weights are loaded: models are
built on torch's ``meta`` device (shapes only) and datasets are indexed, not decoded.

Every problem of every job is printed at the end, grouped (a missing dataset shared by 18 jobs
is one line), so a cluster user fixes everything in one pass instead of one failed job at a
time. The exit code is 1 when anything is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from .config_checks import composition_problem

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
# Peak checkpoint disk of a running job: last.pt (the model: 1 x the weights) beside a mid-stage checkpoint
# (the model and AdamW's two moments: 3 x). A finished job keeps nothing (trainer.keep_checkpoints=none,
# the default), 1 x with keep_checkpoints=last, 1 x per stage with keep_checkpoints=all.
CHECKPOINT_COPIES = 4


@dataclass
class JobPlan:
    """One job of the sweep: its overrides, what it will run, and what stops it from running."""

    overrides: list[str]
    stages: int | None = None
    steps: int | None = None
    parameters: int | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def checkpoint_bytes(self) -> int | None:
        return None if self.parameters is None else self.parameters * 4 * CHECKPOINT_COPIES


# --------------------------------------------------------------------------- the jobs
def expand_jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The overrides of every job a ``clipcl [-m] OVERRIDES`` would start (Hydra's basic sweeper's expansion)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    if not multirun:
        sweeps = [override.input_line for override in parsed if override.is_sweep_override()]
        if sweeps:
            raise SystemExit(f"{', '.join(sweeps)} lists several values: add -m to preflight a sweep.")
        return [list(overrides)]
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


def compose_job(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        return compose(config_name="config", overrides=overrides)


# --------------------------------------------------------------------------- one job's checks
def shape_only_clip(cfg: DictConfig, plan: JobPlan):
    """A ClipBundle whose model lives on the meta device: the real architecture, transforms and tokenizer."""
    import open_clip
    import torch

    from .models import ClipBundle, register_model_configs

    register_model_configs()
    model_cfg = cfg.model
    if "pretrain" in model_cfg:  # the synthetic CLIP: pretrained on first use, then cached
        from .synthetic_clip import CHECKPOINT_NAME, MODEL_NAME, cache_key

        name = MODEL_NAME
        pretrain = OmegaConf.to_container(model_cfg.pretrain, resolve=True)
        cached = Path(model_cfg.cache_dir) / cache_key(pretrain) / CHECKPOINT_NAME
        if not cached.is_file():
            plan.notes.append(f"the synthetic CLIP is pretrained on first use ({cached})")
    else:
        name, pretrained = model_cfg.name, model_cfg.get("pretrained")
        plan.problems.extend(weight_problems(name, pretrained, model_cfg.get("cache_dir")))
    if name not in open_clip.list_models():
        plan.problems.append(f"model.name={name!r} is not an open_clip model (see open_clip.list_models()).")
        return None
    with torch.device("meta"), quiet_root_logger():  # open_clip warns that no weights were loaded: none are wanted
        model = open_clip.create_model(name, device="meta")
    plan.parameters = sum(parameter.numel() for parameter in model.parameters())
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = tuple(getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return ClipBundle(
        model=model,
        tokenizer=open_clip.get_tokenizer(name),
        name=name,
        image_mean=mean,
        image_std=std,
        preprocess_train=open_clip.image_transform(size, is_train=True, mean=mean, std=std),
        preprocess_eval=open_clip.image_transform(size, is_train=False, mean=mean, std=std),
    )


@contextlib.contextmanager
def quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def weight_problems(name: str, pretrained: str | None, cache_dir: str | None) -> list[str]:
    """Whether the weights a job loads are on disk (a file, or a tag in the open_clip/Hugging Face cache)."""
    import open_clip

    from .models import _tag_is_cached, _weights_hint

    if not pretrained or pretrained == "???":
        return [] if pretrained is None else ["model.pretrained is required: the path of a checkpoint file."]
    if os.path.isfile(pretrained):
        return []
    if pretrained not in open_clip.list_pretrained_tags_by_model(name):
        return [f"model.pretrained={pretrained!r} is neither a file nor a pretrained tag of {name}."]
    if _tag_is_cached(name, pretrained, cache_dir):
        return []
    return [_weights_hint(name, pretrained, cache_dir)]


def data_problems(cfg: DictConfig, clip, plan: JobPlan) -> None:
    """Index every dataset the job reads (tasks, probes, the method's reference set); count stages and steps."""
    from hydra.utils import instantiate

    needed_by: dict[str, list[str]] = {}  # one message per distinct problem, with every config key that hits it

    def attempt(what: str, build):
        try:
            return build()
        except Exception as error:  # every data error is reported, none stops the other checks
            cause = root_cause(error)
            needed_by.setdefault(str(cause) or type(cause).__name__, []).append(what)
            return None

    stages = attempt("tasks", lambda: instantiate(cfg.tasks, clip=clip))
    if stages is not None:
        plan.stages = len(stages)
        batch = int(cfg.trainer.batch_size)
        trains = cfg.method.get("_target_", "").rsplit(".", 1)[-1] != "ZeroShot"
        plan.steps = (
            0
            if not trains
            else sum(
                stage.iterations or (stage.epochs or 0) * max(1, math.ceil(len(stage.train) / batch))
                for stage in stages
            )
        )
    for name, builder in (cfg.eval.get("probes") or {}).items():
        if builder is not None:
            attempt(f"eval.probes.{name}", lambda builder=builder: instantiate(builder, clip=clip))
    reference = cfg.method.get("reference")
    if reference is not None and "_target_" in reference:
        attempt("reference", lambda: instantiate(reference)(clip=clip))  # a partial builder
    plan.problems.extend(f"{message}\n(needed by {', '.join(whats)})" for message, whats in needed_by.items())


def root_cause(error: BaseException) -> BaseException:
    """The error under Hydra's InstantiationException wrappers (its text names the file and the fix)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def path_problems(cfg: DictConfig) -> list[str]:
    """Folders the job writes must be creatable and writable."""
    problems = []
    for key, variable in (("output_dir", "CLIPCL_OUTPUTS"), ("cache_dir", "CLIPCL_CACHE")):
        folder = Path(cfg.paths[key])
        existing = nearest_existing(folder)
        if not os.access(existing, os.W_OK):
            problems.append(f"paths.{key}={folder}: {existing} is not writable; set paths.{key}=... or {variable}.")
    return problems


def nearest_existing(folder: Path) -> Path:
    return next(parent for parent in (folder.absolute(), *folder.absolute().parents) if parent.exists())


def check_job(overrides: list[str]) -> JobPlan:
    plan = JobPlan(overrides)
    try:
        cfg = compose_job(overrides)
    except ConfigCompositionException as error:  # an unknown option, or a value or key the schema refuses
        plan.problems.append(composition_problem(error))
        return plan
    except Exception as error:  # Hydra's own message names the key and the valid options
        plan.problems.append(str(error))
        return plan
    plan.problems.extend(path_problems(cfg))
    clip = shape_only_clip(cfg, plan)
    if clip is not None:
        data_problems(cfg, clip, plan)
    return plan


# --------------------------------------------------------------------------- the report
def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def report(plans: list[JobPlan], output_dir: Path) -> str:
    lines = [f"{len(plans)} job{'s' * (len(plans) != 1)}:"]
    width = max(len(" ".join(plan.overrides) or "(defaults)") for plan in plans)
    lines.append(f"  {'#':>3}  {'overrides':<{width}}  {'stages':>6}  {'steps':>9}  {'checkpoint':>10}  status")
    for number, plan in enumerate(plans):
        steps = "?" if plan.steps is None else f"{plan.steps:,}"
        size = "?" if plan.checkpoint_bytes is None else human_bytes(plan.checkpoint_bytes)
        status = f"{len(plan.problems)} problem(s)" if plan.problems else "ok"
        lines.append(
            f"  {number:>3}  {' '.join(plan.overrides) or '(defaults)':<{width}}  "
            f"{plan.stages if plan.stages is not None else '?':>6}  {steps:>9}  {size:>10}  {status}"
        )
    known = [plan.steps for plan in plans if plan.steps is not None]
    total_steps = f"{sum(known):,}" + (
        f" (+ {len(plans) - len(known)} jobs unknown)" if len(known) < len(plans) else ""
    )
    disk = sum(plan.checkpoint_bytes or 0 for plan in plans)
    existing = nearest_existing(output_dir)
    free = shutil.disk_usage(existing).free
    lines.append(
        f"Steps in all: {total_steps}. Checkpoints while running: up to {human_bytes(disk)} "
        f"({CHECKPOINT_COPIES} x fp32 weights per job); free under {existing}: {human_bytes(free)}."
    )
    if disk > free:
        lines.append(f"NOT ENOUGH DISK: the sweep's checkpoints need {human_bytes(disk)} under {output_dir}.")
    notes = grouped(plans, "notes")
    if notes:
        lines.append("Notes:")
        lines.extend(notes)
    problems = grouped(plans, "problems")
    if problems:
        lines.append(f"Everything missing ({len(problems)}):")
        lines.extend(problems)
    else:
        lines.append("Everything this sweep needs is in place.")
    return "\n".join(lines)


def grouped(plans: list[JobPlan], kind: str) -> list[str]:
    """Each distinct message once, with the jobs it concerns."""
    jobs_by_message: dict[str, list[int]] = {}
    for number, plan in enumerate(plans):
        for message in getattr(plan, kind):
            jobs_by_message.setdefault(message, []).append(number)
    lines = []
    for message, jobs in jobs_by_message.items():
        which = "all jobs" if len(jobs) == len(plans) and len(plans) > 1 else "job " + ",".join(map(str, jobs))
        first, *rest = message.splitlines() or [""]
        lines.append(f"  - [{which}] {first}")
        lines.extend(f"      {line}" for line in rest)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clipcl-preflight",
        description="Check a run or a sweep before starting it: jobs, weights, datasets, paths, steps and disk.",
    )
    parser.add_argument("-m", "--multirun", action="store_true", help="a sweep, as `clipcl -m`")
    parser.add_argument("overrides", nargs="*", help="the overrides you would give clipcl")
    args = parser.parse_args(argv)
    # Absent weights must fail at once, not after Hugging Face's retries (a job sets its own environment).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    jobs = expand_jobs(args.overrides, args.multirun)
    plans = [check_job(job) for job in jobs]
    try:
        output_dir = Path(compose_job(jobs[0]).paths.output_dir)
    except Exception:  # already reported as the job's problem
        output_dir = Path(".")
    print(report(plans, output_dir))
    return 1 if any(plan.problems for plan in plans) else 0


if __name__ == "__main__":
    sys.exit(main())
