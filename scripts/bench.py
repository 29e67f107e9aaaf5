"""How fast is the runner against plain open_clip code? One process, one model, one batch, one data set.

    python scripts/bench.py                      # CPU: the tiny synthetic CLIP (SynthCLIP-RN-Tiny), fp32
    python scripts/bench.py --device cuda        # GPU: ViT-B-16 and ViT-B-32, random init, batch 256, bf16
    python scripts/bench.py --methods finetune,lwf --sections train --json outputs/bench.json

Three sections, each a table of images/s, peak memory and a ratio against a baseline measured
in the same run:

- train: (a) a raw open_clip training step written the plainest way (image tower + the stage's
  class prompts through the text tower, CE, AdamW; bf16 autocast on a GPU) -- the ceiling;
  (b) the runner's ``StageTraining.run`` for every method of ``conf/method/*.yaml`` that trains
  (built from its config as ``clipcl method=<name>`` would, timed at stage 2 of 2 so teachers and
  replay memories exist; a method that cannot be built or run here is skipped with the reason),
  plus ``finetune`` through ``train_step`` alone on device-resident batches (the step without
  the runner's data loading) and ``finetune`` again at the end (the machine's drift).
- eval: the runner's ``Evaluator`` (one stage + a classification and a retrieval probe) against
  a loop that only runs ``encode_image`` on the same images.
- data: JPEG files on disk -> ``ImageFiles`` -> DataLoader (workers, pinned memory on CUDA)
  -> the device, with open_clip's train preprocess and the runner's ``paper_train_transform``;
  compared with the runner's finetune step, which it has to keep fed.

Train and eval data are random tensors in memory; every row builds a fresh model from the
same seed. Warm-up steps are not timed. On CUDA img/s is over the whole timed region, bracketed
by ``torch.cuda.synchronize()``, and peak memory is ``torch.cuda.max_memory_allocated`` after a
reset per row; on CPU img/s comes from the median step time, and memory is the process's peak
RSS (``getrusage``, kept as a running maximum) and, where Linux lets the peak be reset
(``/proc/self/clear_refs``), how far the row raised it. ``--json OUT`` writes every row.
See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "conf"
TINY = "SynthCLIP-RN-Tiny"
GPU_MODELS = ("ViT-B-16", "ViT-B-32")
TEMPLATE = "a photo of a {}."
JPEG_SIZE = (500, 375)  # (width, height): a typical photo-dataset image

# The targets (on a GPU).
TARGET_FINETUNE_VS_RAW = 0.9  # runner finetune img/s >= 0.9x the raw loop
TARGET_TEACHER_STEP = 1.3  # lwf / vr_lwf step time <= 1.3x the runner's finetune step
TARGET_TEACHER_MEMORY = 1.3  # methods with a teacher: peak GPU memory <= 1.3x finetune's
TARGET_EVAL_VS_RAW = 0.9  # Evaluator img/s >= 0.9x raw encoding
TARGET_DATA_VS_STEP = 1.0  # the data pipeline delivers >= the finetune step's img/s
STEP_TARGET_METHODS = ("lwf", "vr_lwf")
TARGET_JPEG_REFERENCE = 1.3  # ZSCL with JPEG references: step time <= 1.3x ZSCL with the in-memory reference
REFERENCE_JPEGS = 200  # reference images written to disk for the ZSCL JPEG rows


class Skip(Exception):
    """A row that cannot run here (the method needs data the bench has not, or failed to build)."""


# --------------------------------------------------------------------------- settings
@dataclass
class Settings:
    device: torch.device
    precision: str  # fp32 | bf16
    batch_size: int
    steps: int
    warmup: int
    classes: int
    part: str
    stage: int  # which stage of the two the runner rows train (1-based)
    pool_batches: int  # distinct in-memory training batches (the runner's stage cycles through them)
    eval_images: int
    probe_images: int
    eval_repeats: int
    jpegs: int
    workers: int
    data_batches: int
    sections: tuple[str, ...]

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class Row:
    section: str
    model: str
    name: str
    images: int = 0  # images in the timed region
    seconds: float = 0.0  # the timed region's wall time
    unit_images: int = 0  # images per timed unit (a step, a batch, an evaluation pass)
    unit_seconds: list[float] = field(default_factory=list)  # per-unit times (CPU only: no sync on CUDA)
    peak_gpu_gib: float | None = None
    peak_rss_mib: float | None = None  # the process's peak so far (getrusage and VmHWM, running maximum)
    row_peak_rss_mib: float | None = None  # the peak within this row (after resetting VmHWM), when Linux allows
    row_rss_growth_mib: float | None = None  # that peak minus the RSS at the row's start
    is_baseline: bool = False  # the row the others of its section are compared with
    baseline: str | None = None
    ratio: float | None = None  # img/s over the baseline's img/s
    step_time_vs_finetune: float | None = None  # runner finetune img/s over this row's img/s
    memory_vs_finetune: float | None = None  # peak GPU memory over runner finetune's
    target: str | None = None
    target_met: bool | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        """On CPU from the median unit time (robust to other jobs taking the cores now and then); on CUDA
        from the whole timed region (per-step times would need a sync per step)."""
        if self.unit_seconds:
            return self.unit_images / float(np.median(self.unit_seconds))
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        data = {key: value for key, value in self.__dict__.items() if key != "extra"}
        return data | {"images_per_s": self.images_per_s, "mean_images_per_s": self.mean_images_per_s} | self.extra


# --------------------------------------------------------------------------- measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_mib(key: str) -> float | None:
    """``VmHWM`` (peak RSS) or ``VmRSS`` of this process from /proc, in MiB (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory of one row: CUDA allocator peak, or CPU RSS (process-wide and, where possible, per row).

    Resetting VmHWM also resets what ``getrusage`` reports, so the process-wide peak is kept here
    as the running maximum of every reading (taken before each reset too): it never goes down.
    """

    process_peak_mib = 0.0  # shared by every instance: one process

    def __init__(self, device: torch.device):
        self.device = device
        self.row_rss = False
        self.start_rss: float | None = None

    def reset(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self._update_process_peak()
        try:  # Linux >= 4.0: "5" resets the process's peak RSS (VmHWM) to its current RSS
            Path("/proc/self/clear_refs").write_text("5")
            self.row_rss = True
            self.start_rss = _proc_status_mib("VmRSS")
        except OSError:
            self.row_rss = False

    @classmethod
    def _update_process_peak(cls) -> float:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        maxrss_mib = maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB on Linux
        cls.process_peak_mib = max(cls.process_peak_mib, maxrss_mib, _proc_status_mib("VmHWM") or 0.0)
        return cls.process_peak_mib

    def read(self, row: Row) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            row.peak_gpu_gib = torch.cuda.max_memory_allocated(self.device) / 2**30
            return
        row.peak_rss_mib = self._update_process_peak()
        row.row_peak_rss_mib = _proc_status_mib("VmHWM") if self.row_rss else None
        if row.row_peak_rss_mib is not None and self.start_rss is not None:
            row.row_rss_growth_mib = row.row_peak_rss_mib - self.start_rss


def timed_steps(
    step: Callable[[int], None], warmup: int, steps: int, device: torch.device
) -> tuple[float, list[float]]:
    """Seconds for ``steps`` calls of ``step`` after ``warmup`` untimed ones, and each call's seconds (CPU only)."""
    for index in range(warmup):
        step(index)
    synchronize(device)
    started = time.perf_counter()
    stamps = [started]
    for index in range(warmup, warmup + steps):
        step(index)
        if device.type != "cuda":
            stamps.append(time.perf_counter())
    synchronize(device)
    return time.perf_counter() - started, list(np.diff(stamps))


@contextlib.contextmanager
def quiet_logs(level: int = logging.ERROR):
    """open_clip warns 'No pretrained weights loaded' for every random-init model: keep the tables readable."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(previous, level))
    try:
        yield
    finally:
        root.setLevel(previous)


def raw_autocast(settings: Settings):
    """What a plain open_clip script writes: bf16 autocast or nothing."""
    if settings.precision == "bf16":
        return torch.autocast(device_type=settings.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- shared inputs
class Workload:
    """The model name, its input size and the in-memory data every row of one model uses."""

    def __init__(self, model_name: str, settings: Settings):
        from clipcl_runner.data.stages import TensorImages

        self.name, self.settings = model_name, settings
        with quiet_logs():
            probe = open_clip.create_model(model_name, device="cpu")
        size = probe.visual.image_size
        self.image_size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        self.preprocess_cfg = dict(probe.visual.preprocess_cfg)
        self.parameters = sum(p.numel() for p in probe.parameters())
        del probe
        self.tokenizer = open_clip.get_tokenizer(model_name)
        generator = torch.Generator().manual_seed(0)
        height, width = self.image_size
        count = settings.batch_size * settings.pool_batches
        self.train_images = torch.randn(count, 3, height, width, generator=generator)
        self.train_labels = torch.randint(0, settings.classes, (count,), generator=generator)
        self.train_data = TensorImages(self.train_images, self.train_labels)
        self.classnames = self.classnames_of(0)
        self.finetune_rate: float | None = None
        self.finetune_peak_gib: float | None = None
        self.skipped: list[dict] = []  # rows that could not run here, with the reason
        self.reference_jpegs: list[Path] | None = None  # ZSCL's JPEG reference rows (written on first use)

    def skip(self, section: str, name: str, reason: str) -> None:
        print(f"  skipped {name}: {reason}")
        self.skipped.append({"section": section, "model": self.name, "name": name, "reason": reason})

    def classnames_of(self, stage_index: int) -> list[str]:
        return [f"stage{stage_index + 1} class {index}" for index in range(self.settings.classes)]

    def fresh_model(self) -> nn.Module:
        torch.manual_seed(0)
        with quiet_logs():
            return open_clip.create_model(self.name, device=self.settings.device)

    def bundle(self, model: nn.Module):
        from open_clip.transform import PreprocessCfg, image_transform_v2

        from clipcl_runner.models import ClipBundle

        cfg = PreprocessCfg(**self.preprocess_cfg)
        return ClipBundle(
            model=model,
            tokenizer=self.tokenizer,
            name=self.name,
            image_mean=tuple(cfg.mean),
            image_std=tuple(cfg.std),
            preprocess_train=image_transform_v2(cfg, is_train=True),
            preprocess_eval=image_transform_v2(cfg, is_train=False),
        )

    def stages(self, iterations: int):
        """Two stages of ``classes`` classes on the in-memory pool (the method rows train ``settings.stage``)."""
        from clipcl_runner.data.stages import Stage

        made = []
        for index in range(2):
            made.append(
                Stage(
                    f"bench{index + 1}",
                    self.classnames_of(index),
                    self.train_data,
                    self.train_data,
                    train_templates=[TEMPLATE],
                    iterations=iterations,
                )
            )
        return made

    def device_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        b, device = self.settings.batch_size, self.settings.device
        return [
            (self.train_images[i * b : (i + 1) * b].to(device), self.train_labels[i * b : (i + 1) * b].to(device))
            for i in range(self.settings.pool_batches)
        ]


# --------------------------------------------------------------------------- (a) the raw loop
def raw_training_loop(work: Workload) -> Row:
    """The ceiling: plain open_clip + torch, nothing of the runner."""
    settings, device = work.settings, work.settings.device
    model = work.fresh_model()
    model.train()
    for name, param in model.named_parameters():  # what the runner's `part` trains; never the logit scale
        tower = "image" if name.startswith("visual.") else "logit" if name.startswith("logit_") else "text"
        param.requires_grad_(tower != "logit" and settings.part in ("whole", tower))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    classnames = work.classnames_of(settings.stage - 1)  # the classes the runner's rows train on
    tokens = work.tokenizer([TEMPLATE.format(name) for name in classnames]).to(device)
    batches = work.device_batches()

    def step(index: int) -> None:
        images, labels = batches[index % len(batches)]
        with raw_autocast(settings):
            image_features = model.encode_image(images, normalize=True)
            text_features = model.encode_text(tokens, normalize=True)
            logits = model.logit_scale.exp() * image_features @ text_features.t()
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds, units = timed_steps(step, settings.warmup, settings.steps, device)
    return Row(
        "train",
        work.name,
        "raw open_clip loop",
        settings.steps * settings.batch_size,
        seconds,
        settings.batch_size,
        units,
        is_baseline=True,
        note="device-resident batches",
    )


# --------------------------------------------------------------------------- (b) the runner's step
def method_names() -> list[str]:
    return sorted(path.stem for path in CONF_DIR.glob("method/*.yaml"))


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # left over from an in-process @hydra.main (tests): compose anew
        GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name="config", overrides=overrides)


def method_config(name: str, settings: Settings):
    """The composed run config for ``method=name`` (with the synthetic reference set where one exists)."""
    overrides = [f"method={name}", f"part={settings.part}", "logger=none", f"trainer.batch_size={settings.batch_size}"]
    reference = CONF_DIR / "reference" / "synthetic.yaml"
    if not reference.exists():
        return compose(overrides)
    last_error = None
    for option in ("reference=synthetic", "+reference=synthetic"):
        try:
            return compose(overrides + [option])
        except Exception as error:  # noqa: BLE001 - not a default group, or already set: try the other form
            last_error = error
    raise Skip(f"cannot compose method={name} with reference=synthetic: {last_error}")


def build_method(name: str, cfg, clip):
    """``instantiate(cfg.method)`` as the stage loop does; a reference set is built from ``cfg.reference`` if asked."""
    from hydra.utils import instantiate

    try:
        return instantiate(cfg.method, _convert_="all")
    except Exception as error:  # noqa: BLE001
        first = error
    if "reference" in cfg.method and cfg.get("reference") is not None:
        try:
            built = instantiate(cfg.reference)(clip=clip)  # conf/reference/* are partial builders
            return instantiate(cfg.method, reference=built, _convert_="all")
        except Exception as error:  # noqa: BLE001
            raise Skip(f"cannot build it with the synthetic reference set: {type(error).__name__}: {error}") from error
    raise Skip(f"cannot build it from conf/method/{name}.yaml: {type(first).__name__}: {str(first).splitlines()[0]}")


def has_teacher(method, model: nn.Module) -> bool:
    return any(isinstance(value, nn.Module) and value is not model for value in vars(method).values())


def run_context(work: Workload, cfg, model: nn.Module, clip, iterations: int):
    """The RunContext the stage loop would build (``precision`` where this version of the runner has it)."""
    from clipcl_runner.methods.base import RunContext

    trainer = cfg.trainer
    fields = {f.name for f in dataclasses.fields(RunContext)}
    optional = {"precision": work.settings.precision, "clip": clip}
    return RunContext(
        model=model,
        tokenizer=work.tokenizer,
        device=work.settings.device,
        stages=work.stages(iterations),
        part=work.settings.part,
        train_logit_scale=trainer.train_logit_scale,
        train_head=trainer.train_head,
        label_smoothing=trainer.label_smoothing,
        **{k: v for k, v in optional.items() if k in fields},
    )


def runner_training(
    work: Workload,
    name: str,
    memory: PeakMemory,
    step_only: bool = False,
    stage: int | None = None,
    reference_jpegs: list[Path] | None = None,
    synchronous_reference: bool = False,
    workers: int = 0,
) -> Row:
    """The runner's ``StageTraining.run`` (or only its ``train_step``) for one method at stage ``stage`` (1-based).

    The stages before it are prepared and finished as the stage loop does (``begin_stage``,
    ``training_stage``, ``end_stage``) without training, so teachers and replay memories exist;
    a method that trains nothing at that stage (joint) is timed at the first stage instead.

    ``reference_jpegs``: ZSCL's reference images are these files, read as COCO's are (``ImageFiles``
    with the evaluation transform); ``synchronous_reference`` draws them on the training thread (the
    pre-stream code path, still the fallback of ``ZSCL.training_loss``) instead of the trainer's
    auxiliary stream with ``workers`` worker processes.
    """
    from hydra.utils import instantiate

    from clipcl_runner.trainer import StageTraining, TrainSettings, set_train_mode

    settings, device = work.settings, work.settings.device
    stage = settings.stage if stage is None else stage
    cfg = method_config(name, settings)
    model = work.fresh_model()
    clip = work.bundle(model)
    method = build_method(name, cfg, clip)
    if not getattr(method, "trains", True):
        raise Skip("does not train")
    run = run_context(work, cfg, model, clip, settings.warmup + settings.steps)
    parameters = method.setup(run)  # after this the model may be wrapped (RKR): use run.model
    if reference_jpegs is not None:
        from clipcl_runner.data.folders import ImageFiles
        from clipcl_runner.data.reference import ReferenceSet

        files = ImageFiles(reference_jpegs, list(range(len(reference_jpegs))), clip.preprocess_eval, "coco")
        method.reference_set = ReferenceSet(files, method.reference_set.sentences)  # sentences: already encoded
    for index in range(stage):
        run.stage_index = index
        method.begin_stage(run)
        run.train_stage = method.training_stage(run)
        if index < stage - 1:
            method.end_stage(run)
    if run.train_stage is None:
        if stage > 1:
            del model, clip, method, run, parameters
            gc.collect()
            row = runner_training(work, name, memory, step_only, stage=1)
            row.note += f"; trains nothing at stage {stage}: timed at stage 1"
            return row
        raise Skip(f"trains nothing at stage {stage}")
    trainer = cfg.trainer
    memory.reset()  # peak of the training itself: model, teacher, optimiser state, activations
    training = StageTraining(
        run,
        method,
        parameters,
        instantiate(trainer.optimizer),
        instantiate(trainer.scheduler) if trainer.get("scheduler") else None,
        TrainSettings(
            batch_size=settings.batch_size,
            num_workers=workers,
            precision=settings.precision,
            grad_clip_norm=trainer.grad_clip_norm,
            freeze_bn=trainer.freeze_bn,
            progress=False,
        ),
        seed=1,
    )
    if synchronous_reference:
        training.streams = {}  # no stream: ZSCL.training_loss draws and decodes its batch itself, as before
    teacher = has_teacher(method, run.model)
    if step_only:
        batches = work.device_batches()
        set_train_mode(run.model, trainer.freeze_bn)
        seconds, units = timed_steps(
            lambda i: training.train_step(*batches[i % len(batches)]), settings.warmup, settings.steps, device
        )
        label, note, timed = f"{name} [train_step only]", "device-resident batches, no DataLoader", settings.steps
    else:
        stamps: list[float] = []

        def after_step(state) -> None:  # called by the runner after every step
            if state.step == settings.warmup or state.step == state.total:
                synchronize(device)
            if state.step >= settings.warmup and (
                device.type != "cuda" or state.step in (settings.warmup, state.total)
            ):
                stamps.append(time.perf_counter())

        if settings.warmup == 0:
            stamps.append(time.perf_counter())
        training.run(after_step)
        seconds = stamps[-1] - stamps[0]
        units = list(np.diff(stamps)) if device.type != "cuda" else []
        label, note = name, "StageTraining.run over an in-memory stage"
        timed = training.total - settings.warmup  # joint trains every stage's steps at once
    note += f"; stage {stage}, {len(run.training.classnames)} classes"
    return Row(
        "train",
        work.name,
        label,
        timed * settings.batch_size,
        seconds,
        settings.batch_size,
        units,
        note=note,
        extra={
            "method": name,
            "teacher": teacher,
            "timed_steps": timed,
            "stage": stage,
            "train_classes": len(run.training.classnames),
        },
    )


# --------------------------------------------------------------------------- (c) evaluation
def eval_inputs(work: Workload):
    from clipcl_runner.data.stages import ClassificationProbe, RetrievalProbe, Stage, TensorImages

    settings = work.settings
    generator = torch.Generator().manual_seed(1)
    height, width = work.image_size

    def images(count: int, classes: int) -> TensorImages:
        return TensorImages(
            torch.randn(count, 3, height, width, generator=generator),
            torch.randint(0, classes, (count,), generator=generator),
        )

    stage = Stage(
        "bench1",
        list(work.classnames),
        work.train_data,
        images(settings.eval_images, settings.classes),
        train_templates=[TEMPLATE],
        iterations=1,
    )
    classification = ClassificationProbe(
        "probe_cls",
        images(settings.probe_images, settings.classes),
        [f"probe {name}" for name in work.classnames],
        [TEMPLATE, "a picture of the {}."],
    )
    retrieval_images = images(settings.probe_images, 1)
    captions = [f"caption {k} of image {i}" for i in range(settings.probe_images) for k in range(2)]
    retrieval = RetrievalProbe(
        "probe_ret", retrieval_images, captions, torch.arange(settings.probe_images).repeat_interleave(2)
    )
    datasets = [stage.test, classification.dataset, retrieval.dataset]
    return stage, [classification, retrieval], datasets


def raw_encode_row(work: Workload, datasets: list) -> Row:
    """The baseline: ``encode_image`` under autocast, no grad, on the same images already on the device."""
    settings, device = work.settings, work.settings.device
    count = sum(len(d) for d in datasets)
    model = work.fresh_model().eval()
    batches = [
        d.images[i : i + settings.batch_size].to(device)
        for d in datasets
        for i in range(0, len(d), settings.batch_size)
    ]

    @torch.no_grad()
    def encode_all(_: int) -> None:
        for batch in batches:
            with raw_autocast(settings):
                model.encode_image(batch, normalize=True)

    seconds, units = timed_steps(encode_all, 1, settings.eval_repeats, device)
    return Row(
        "eval",
        work.name,
        "raw encode_image",
        count * settings.eval_repeats,
        seconds,
        count,
        units,
        is_baseline=True,
        note="device-resident images, no grad",
    )


def evaluator_row(work: Workload, label: str, note: str, call: Callable, evaluator_args: dict, count: int) -> Row:
    """One timed use of the runner's ``Evaluator`` (one warm-up pass, then ``eval_repeats`` timed ones)."""
    from clipcl_runner.evaluation import Evaluator

    settings = work.settings
    model = work.fresh_model().eval()
    evaluator = Evaluator(**evaluator_args)
    seconds, units = timed_steps(lambda _: call(evaluator, model), 1, settings.eval_repeats, settings.device)
    return Row("eval", work.name, label, count * settings.eval_repeats, seconds, count, units, note=note)


def eval_rows(work: Workload) -> list[Row]:
    settings, device = work.settings, work.settings.device
    stage, probes, datasets = eval_inputs(work)
    count = sum(len(d) for d in datasets)
    memory = PeakMemory(device)
    memory.reset()
    raw = raw_encode_row(work, datasets)
    memory.read(raw)
    rows = [raw]
    evaluator_args = dict(
        stages=[stage],
        probes=probes,
        tokenizer=work.tokenizer,
        device=device,
        precision=settings.precision,
        batch_size=settings.batch_size,
    )
    for label, note, call in (
        (
            "Evaluator (stage + 2 probes)",
            f"{count} images: stage test, classification probe "
            "(2 templates), retrieval probe (2 captions/image); heads and metrics included",
            lambda evaluator, model: evaluator(model, 1),
        ),
        (
            "Evaluator.encode_images only",
            "the same images through the Evaluator's own loader, no heads",
            lambda evaluator, model: [evaluator.encode_images(model, d) for d in datasets],
        ),
    ):
        memory.reset()
        try:
            row = evaluator_row(work, label, note, call, evaluator_args, count)
        except Exception as error:  # noqa: BLE001 - report, and keep the other rows
            work.skip("eval", label, f"failed while running: {type(error).__name__}: {error}")
            continue
        memory.read(row)
        row.baseline, row.ratio = raw.name, row.images_per_s / raw.images_per_s
        rows.append(row)
    for row in rows:
        if row.name.startswith("Evaluator (stage"):
            row.target = f">= {TARGET_EVAL_VS_RAW}x raw encode"
            row.target_met = row.ratio >= TARGET_EVAL_VS_RAW if settings.cuda else None
    return rows


# --------------------------------------------------------------------------- (d) the data pipeline
def write_jpegs(folder: Path, count: int) -> list[Path]:
    """``count`` photo-like JPEGs (smooth noise compresses like a photo; pure noise would be far larger)."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        small = rng.integers(0, 256, (JPEG_SIZE[1] // 8, JPEG_SIZE[0] // 8, 3), dtype=np.uint8)
        path = folder / f"{index:05d}.jpg"
        Image.fromarray(small).resize(JPEG_SIZE, Image.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def data_rows(work: Workload, paths: list[Path]) -> list[Row]:
    from clipcl_runner.data.folders import ImageFiles, paper_train_transform

    settings, device = work.settings, work.settings.device
    with quiet_logs():
        clip = work.bundle(open_clip.create_model(work.name, device="cpu"))
    rows, memory = [], PeakMemory(device)
    configurations = [
        (f"open_clip train preprocess, {settings.workers} workers", clip.preprocess_train, settings.workers),
        (f"paper_train_transform, {settings.workers} workers", paper_train_transform(clip), settings.workers),
    ]
    if settings.workers:  # the runner's default (trainer.num_workers: 0) decodes in the training process
        configurations.append(("open_clip train preprocess, 0 workers", clip.preprocess_train, 0))
    for label, transform, workers in configurations:
        memory.reset()
        dataset = ImageFiles(paths, [i % settings.classes for i in range(len(paths))], transform)
        total = settings.batch_size * (settings.warmup + settings.data_batches)
        loader = DataLoader(
            dataset,
            batch_size=settings.batch_size,
            num_workers=workers,
            sampler=RandomSampler(
                dataset, replacement=True, num_samples=total, generator=torch.Generator().manual_seed(0)
            ),
            pin_memory=settings.cuda,
            persistent_workers=workers > 0,
            drop_last=True,
        )
        started = time.perf_counter()
        clock = started if settings.warmup == 0 else None  # no warm-up: worker start-up is timed too
        first_batch_s, timed_batches = None, 0
        for index, (images, labels) in enumerate(loader):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if index == 0:
                synchronize(device)
                first_batch_s = time.perf_counter() - started
            if clock is None:
                if index + 1 == settings.warmup:
                    synchronize(device)
                    clock = time.perf_counter()
            else:
                timed_batches += 1
        synchronize(device)
        seconds = time.perf_counter() - clock
        row = Row(
            "data",
            work.name,
            label,
            timed_batches * settings.batch_size,
            seconds,
            note=f"ImageFiles: {len(paths)} JPEGs {JPEG_SIZE[0]}x{JPEG_SIZE[1]} (page-cached), "
            f"{workers} workers{', pinned memory' if settings.cuda else ''}, to {device}",
            extra={"first_batch_s": first_batch_s, "workers": workers},
        )
        memory.read(row)
        rows.append(row)
        del loader
    for row in rows:
        if work.finetune_rate:
            row.baseline, row.ratio = "runner finetune step", row.images_per_s / work.finetune_rate
            row.target = f">= {TARGET_DATA_VS_STEP}x the finetune step"
            row.target_met = row.ratio >= TARGET_DATA_VS_STEP if settings.cuda else None
    return rows


# --------------------------------------------------------------------------- driving and printing
def train_rows(work: Workload, methods: list[str]) -> list[Row]:
    settings = work.settings
    memory = PeakMemory(settings.device)
    rows: list[Row] = []
    jobs: list[tuple[str, Callable[[], Row]]] = [("raw open_clip loop", lambda: raw_training_loop(work))]
    for name in methods:
        jobs.append((name, lambda name=name: runner_training(work, name, memory)))
        if name == "finetune":
            jobs.append(
                ("finetune [train_step only]", lambda: runner_training(work, "finetune", memory, step_only=True))
            )
    if "zscl" in methods:  # ZSCL's reference images as JPEG files: drawn on the training thread vs the stream

        def jpegs() -> list[Path]:  # written once, on first use
            if work.reference_jpegs is None:
                work.reference_jpegs = write_jpegs(Path(tempfile.mkdtemp(prefix="bench_reference_")), REFERENCE_JPEGS)
            return work.reference_jpegs

        jobs.append(
            (
                "zscl [JPEG reference, synchronous draws]",
                lambda: runner_training(work, "zscl", memory, reference_jpegs=jpegs(), synchronous_reference=True),
            )
        )
        jobs.append(
            (
                f"zscl [JPEG reference, stream, {settings.workers} workers]",
                lambda: runner_training(work, "zscl", memory, reference_jpegs=jpegs(), workers=settings.workers),
            )
        )
    if "finetune" in methods and len(methods) > 1:  # the same row again: how much the machine drifted meanwhile
        jobs.append(("finetune [repeat]", lambda: runner_training(work, "finetune", memory)))
    for label, job in jobs:
        memory.reset()
        began = time.perf_counter()
        try:
            row = job()
        except Skip as reason:
            work.skip("train", label, str(reason))
            continue
        except Exception as error:  # noqa: BLE001 - a broken method must not stop the other rows
            detail = traceback.format_exception_only(type(error), error)[-1].strip()
            work.skip("train", label, f"failed while running: {detail}")
            continue
        finally:
            gc.collect()
        memory.read(row)
        row.name = label if label.startswith(("finetune [", "zscl [")) else row.name
        if label.startswith("zscl [JPEG"):
            row.note += f"; reference: {REFERENCE_JPEGS} JPEGs {JPEG_SIZE[0]}x{JPEG_SIZE[1]} through ImageFiles"
        row.extra["wall_s"] = time.perf_counter() - began  # with model building and method setup
        rows.append(row)
        if label == "finetune":
            work.finetune_rate, work.finetune_peak_gib = row.images_per_s, row.peak_gpu_gib
    raw = rows[0] if rows and rows[0].name == "raw open_clip loop" else None
    for row in rows[1:]:
        if raw:
            row.baseline, row.ratio = raw.name, row.images_per_s / raw.images_per_s
        method = row.extra.get("method")
        if work.finetune_rate and row.name != "finetune" and row.name != "finetune [train_step only]":
            row.step_time_vs_finetune = work.finetune_rate / row.images_per_s
            if row.peak_gpu_gib and work.finetune_peak_gib:
                row.memory_vs_finetune = row.peak_gpu_gib / work.finetune_peak_gib
        targets, met = [], []
        if row.name == "finetune" and row.ratio is not None:
            targets.append(f">= {TARGET_FINETUNE_VS_RAW}x raw")
            met.append(row.ratio >= TARGET_FINETUNE_VS_RAW)
        if method in STEP_TARGET_METHODS and row.step_time_vs_finetune is not None:
            targets.append(f"step <= {TARGET_TEACHER_STEP}x finetune")
            met.append(row.step_time_vs_finetune <= TARGET_TEACHER_STEP)
        if row.extra.get("teacher") and settings.cuda and row.memory_vs_finetune is not None:
            targets.append(f"memory <= {TARGET_TEACHER_MEMORY}x finetune")
            met.append(row.memory_vs_finetune <= TARGET_TEACHER_MEMORY)
        in_memory = next((r for r in rows if r.name == "zscl"), None)
        if row.name.startswith("zscl [JPEG") and in_memory is not None:
            row.extra["step_time_vs_zscl"] = in_memory.images_per_s / row.images_per_s
            if "stream" in row.name and settings.workers > 0:
                targets.append(f"step <= {TARGET_JPEG_REFERENCE}x zscl (in-memory reference)")
                met.append(row.extra["step_time_vs_zscl"] <= TARGET_JPEG_REFERENCE)
        if targets:
            row.target = "; ".join(targets)
            row.target_met = all(met) if settings.cuda else None
    return rows


def memory_text(row: Row) -> str:
    if row.peak_gpu_gib is not None:
        return f"{row.peak_gpu_gib:8.2f} GiB"
    if row.peak_rss_mib is None:
        return "-"
    here = f"+{max(0.0, row.row_rss_growth_mib):.0f}" if row.row_rss_growth_mib is not None else "?"
    return f"{here:>5} / {row.peak_rss_mib:.0f} MiB"


def print_table(title: str, rows: list[Row], cuda: bool) -> None:
    memory_header = "peak GPU mem" if cuda else "RSS +row/process"
    print(f"\n## {title}")
    print(
        f"{'row':42} {'img/s':>9} {memory_header:>16} {'vs baseline':>12} {'step vs FT':>10} {'mem vs FT':>9}  target"
    )
    for row in rows:
        ratio = f"{row.ratio:11.2f}x" if row.ratio is not None else f"{'(baseline)' if row.is_baseline else '-':>12}"
        step = f"{row.step_time_vs_finetune:9.2f}x" if row.step_time_vs_finetune is not None else f"{'':>10}"
        mem = f"{row.memory_vs_finetune:8.2f}x" if row.memory_vs_finetune is not None else f"{'':>9}"
        target = ""
        if row.target:
            verdict = "n/a on CPU" if row.target_met is None else ("met" if row.target_met else "MISSED")
            target = f"{row.target}: {verdict}"
        print(f"{row.name[:42]:42} {row.images_per_s:9.1f} {memory_text(row):>16} {ratio} {step} {mem}  {target}")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def git_state() -> str | None:
    """The commit measured, with '+dirty' when the working tree had uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=f"open_clip model names (default: {TINY} on CPU, {' '.join(GPU_MODELS)} on CUDA)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 on CPU, 256 on CUDA")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per row (default 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before (default 2 CPU, 5 CUDA)")
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated method names from conf/method/ (default: every one that trains)",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "bf16", "fp32"),
        help="auto: bf16 autocast on CUDA, fp32 on CPU (the runner's rule)",
    )
    parser.add_argument("--part", default="whole", choices=("whole", "image", "text"), help="what trains")
    parser.add_argument("--classes", type=int, default=100, help="class prompts per stage (default 100)")
    parser.add_argument(
        "--stage",
        type=int,
        default=2,
        choices=(1, 2),
        help="which of two stages the method rows train (default 2: teachers and replay memories "
        "exist, LwF distils over both stages' classes); a method that trains nothing there (joint) "
        "is timed at stage 1",
    )
    parser.add_argument("--eval-images", type=int, default=None, help="stage test images (default 256 CPU, 2048 CUDA)")
    parser.add_argument("--probe-images", type=int, default=None, help="images per probe (default 128 CPU, 1024 CUDA)")
    parser.add_argument("--eval-repeats", type=int, default=None, help="timed evaluations (default 2 CPU, 3 CUDA)")
    parser.add_argument("--jpegs", type=int, default=None, help="JPEG files written (default 64 CPU, 512 CUDA)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader workers of the data section (default: 2 on CPU, cores - 2 up to 16 on CUDA)",
    )
    parser.add_argument(
        "--data-batches", type=int, default=None, help="timed batches of the data section (default 8 CPU, 16 CUDA)"
    )
    parser.add_argument("--sections", default="train,eval,data", help="comma-separated: train, eval, data")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 on CPU -- on a shared 2-core machine 2 OpenMP threads "
        "ran the tiny model ~10x slower than 1 -- and torch's own on CUDA; 0 = torch's own)",
    )
    parser.add_argument("--json", dest="json_out", default=None, help="write every row and the settings here")
    return parser.parse_args(argv)


def resolve_settings(args: argparse.Namespace) -> tuple[Settings, list[str]]:
    from clipcl_runner.precision import resolve_device, resolve_precision

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.precision == "bf16" and not cuda:
        print("# --precision bf16 on CPU: the runner runs fp32 on CPU (precision.resolve_precision), so does the bench")
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = set(sections) - {"train", "eval", "data"}
    if unknown:
        raise SystemExit(f"unknown --sections {sorted(unknown)}; choose from train, eval, data")
    pick = lambda value, cpu, gpu: value if value is not None else (gpu if cuda else cpu)  # noqa: E731
    settings = Settings(
        device=device,
        precision=resolve_precision(args.precision, device),
        batch_size=pick(args.batch_size, 32, 256),
        steps=pick(args.steps, 20, 20),
        warmup=pick(args.warmup, 2, 5),
        classes=args.classes,
        part=args.part,
        stage=args.stage,
        pool_batches=4,
        eval_images=pick(args.eval_images, 256, 2048),
        probe_images=pick(args.probe_images, 128, 1024),
        eval_repeats=pick(args.eval_repeats, 2, 3),
        jpegs=pick(args.jpegs, 64, 512),
        workers=pick(args.workers, min(2, os.cpu_count() or 1), max(1, min(16, (os.cpu_count() or 1) - 2))),
        data_batches=pick(args.data_batches, 8, 16),
        sections=sections,
    )
    models = [m for value in (args.models or ([*GPU_MODELS] if cuda else [TINY])) for m in value.split(",") if m]
    return settings, models


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from clipcl_runner.models import register_model_configs

    register_model_configs()
    settings, models = resolve_settings(args)
    threads = args.threads if args.threads is not None else (0 if settings.cuda else 1)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return run_bench(args, settings, models, argv)
    finally:
        torch.set_num_threads(previous_threads)  # main() may be called inside another process (the tests)


def run_bench(args: argparse.Namespace, settings: Settings, models: list[str], argv: list[str] | None) -> dict:
    available = method_names()
    if args.methods:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        missing = [m for m in methods if m not in available]
        if missing:
            raise SystemExit(f"no conf/method/<name>.yaml for {missing}; known: {available}")
    else:
        methods = available
    if "finetune" in methods:  # the baseline of every other method: measure it first
        methods = ["finetune"] + [m for m in methods if m != "finetune"]
    device_name = torch.cuda.get_device_name(settings.device) if settings.cuda else cpu_name()
    meta = {
        "device": str(settings.device),
        "device_name": device_name,
        "precision": settings.precision,
        "batch_size": settings.batch_size,
        "steps": settings.steps,
        "warmup": settings.warmup,
        "classes": settings.classes,
        "part": settings.part,
        "stage": settings.stage,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "workers": settings.workers,
        "models": models,
        "methods": methods,
        "sections": list(settings.sections),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "git": git_state(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print(
        f"# bench: {', '.join(models)} | {settings.device} ({device_name}) | {settings.precision} | "
        f"batch {settings.batch_size} | {settings.steps} timed steps after {settings.warmup} warm-up | "
        f"{settings.classes} classes/stage | stage {settings.stage} | part={settings.part} | {torch.get_num_threads()} torch threads"
    )
    if not settings.cuda:
        print(
            "# CPU memory: 'RSS +row/process' = how far the row raised RSS above its start (VmHWM after a reset; "
            "'?' where Linux does not allow it) / the process's peak RSS so far (getrusage, kept as a running "
            "maximum: it never goes down, so later rows inherit earlier peaks); DataLoader workers are other "
            "processes, not counted"
        )
        print(
            "# CPU img/s: from the median step (or pass) time, robust to other jobs on the cores; JSON has the mean too"
        )
        print("# targets are defined for a GPU; on CPU they are shown, not judged")
    all_rows: list[Row] = []
    skipped: list[dict] = []
    started = time.perf_counter()

    def save(rows: list[Row], skipped_rows: list[dict], complete: bool) -> dict:
        """The result so far; written to --json after every section (``meta.complete`` says whether it ended)."""
        result = {
            "meta": {**meta, "complete": complete},
            "rows": [row.to_json() for row in rows],
            "skipped": skipped_rows,
        }
        if args.json_out:
            out = Path(args.json_out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2))
        return result

    with tempfile.TemporaryDirectory(prefix="clipcl_bench_") as folder:
        paths = write_jpegs(Path(folder), settings.jpegs) if "data" in settings.sections else []
        for model_name in models:
            work = Workload(model_name, settings)
            print(
                f"\n# {model_name}: {work.parameters / 1e6:.1f}M parameters, "
                f"{work.image_size[0]}x{work.image_size[1]} input"
            )
            if "train" in settings.sections:
                rows = train_rows(work, methods)
                print_table(
                    f"train step ({model_name}): raw loop = ceiling; 'step vs FT' = step time "
                    "over the runner's finetune step",
                    rows,
                    settings.cuda,
                )
                all_rows += rows
                save(all_rows, skipped + work.skipped, complete=False)  # a timed-out run keeps what it measured
            if "eval" in settings.sections:
                rows = eval_rows(work)
                print_table(f"evaluation ({model_name}) vs raw encode_image", rows, settings.cuda)
                all_rows += rows
                save(all_rows, skipped + work.skipped, complete=False)  # a timed-out run keeps what it measured
            if "data" in settings.sections:
                rows = data_rows(work, paths)
                print_table(f"data pipeline ({model_name}) vs the runner's finetune step", rows, settings.cuda)
                all_rows += rows
                save(all_rows, skipped + work.skipped, complete=False)  # a timed-out run keeps what it measured
            skipped += work.skipped
            del work
            gc.collect()
    meta["seconds"] = time.perf_counter() - started
    print(f"\n# {meta['seconds']:.0f} s in all")
    result = save(all_rows, skipped, complete=True)
    if args.json_out:
        print(f"# rows written to {args.json_out}")
    return result


if __name__ == "__main__":
    main()
