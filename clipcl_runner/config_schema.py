"""The config's schema: the type of every key of ``trainer``, ``eval``, ``logger`` and the top level.

Registered in Hydra's ConfigStore as ``config_schema`` and listed first in ``conf/config.yaml``'s
defaults, so every YAML file and override merges onto typed nodes: Hydra itself refuses a wrong type
(``trainer.batch_size=abc``), a value outside a choice (``trainer.precision=fp8``) or an unknown key
under these nodes (``trainer.batchsize=8``), naming the key. Ranges (``>= 1``) and rules that link
keys stay in ``config_checks``. The YAML files keep the values and say what each key means; the
defaults here only let a dataclass be built in code (the trainer's tests) and equal the YAML's.

Choice keys are ``str`` enums whose members are named by their value: a node compares equal to the
plain string (``cfg.trainer.precision == "bf16"``), formats as it (``__str__``) and hashes as it.
Containers of the config that are written out (identity, W&B) use ``enum_to_str=True``.

``paths``, ``model``, ``method``, ``tasks`` and ``reference`` stay free-form (``_target_`` builders
with their own keyword arguments). The root is left open while Hydra composes, because experiment
presets add their own lookup tables at the top level (``LOOKUP_TABLES``: ``lr_by_method``,
``method_switches``, ...); declaring them would put empty keys into every run's config and change the
identity of runs made before. Hydra closes the root once composed, so a command-line typo is refused.

Import-light (stdlib and omegaconf/hydra only): ``clipcl`` loads it before it knows the config is valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

SCHEMA_NAME = "config_schema"


class Choice(str, Enum):
    """A choice key's value: equal to, formatted as and hashed as its plain string."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The allowed values as plain strings: the modules that check a value themselves use these."""
        return tuple(member.value for member in cls)


class Part(Choice):  # what trains
    whole = "whole"
    image = "image"
    text = "text"


class Precision(Choice):
    auto = "auto"
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


class AutoOrFp32(Choice):  # eval.precision, trainer.teacher_precision
    auto = "auto"
    fp32 = "fp32"


class TrainHead(Choice):
    stage = "stage"
    seen = "seen"


class TaskHead(Choice):
    stage = "stage"
    seen = "seen"
    all = "all"


class RetrievalTies(Choice):
    official = "official"
    optimistic = "optimistic"


class KeepCheckpoints(Choice):  # what a finished run keeps
    none = "none"
    last = "last"
    all = "all"


class LoggerMode(Choice):  # tracking's W&B modes; none and off are aliases of disabled
    online = "online"
    offline = "offline"
    shared = "shared"
    disabled = "disabled"
    none = "none"
    off = "off"


@dataclass
class TrainerConfig:
    """``trainer``: conf/trainer/default.yaml says what each key does."""

    device: str = "auto"
    threads: int | None = None
    precision: Precision = Precision.auto
    batch_size: int = 32
    num_workers: int = 0
    drop_last: bool | None = None
    optimizer: Any = None  # a _partial_ torch.optim builder
    scheduler: Any = None  # a _partial_ factory f(optimizer, total_steps=...)
    grad_clip_norm: float | None = None
    grad_clip_before_unscale: bool = False
    clamp_logit_scale: bool = True
    teacher_precision: AutoOrFp32 = AutoOrFp32.auto
    fp16_max_skipped_steps: int = 50
    fp16_min_scale: float = 1e-4
    train_logit_scale: bool = False
    train_head: TrainHead = TrainHead.stage
    label_smoothing: float = 0.0
    ddp_find_unused_parameters: bool = False
    compile: bool = False
    channels_last: bool = False
    decoded_cache: bool = False
    tf32: bool = True
    freeze_bn: bool = False
    checkpoint: bool = True
    keep_checkpoints: KeepCheckpoints = KeepCheckpoints.none
    checkpoint_every_steps: int | None = None
    stop_after_stage: int | None = None
    progress: bool = True


@dataclass
class EvalConfig:
    """``eval``: conf/eval/synthetic.yaml says what each key does."""

    before_first_stage: bool = True
    every_epoch: bool = False
    task_head: TaskHead = TaskHead.stage
    balanced: bool = False
    decoded_cache: bool = False
    batch_size: int = 500
    retrieval_ties: RetrievalTies = RetrievalTies.official
    precision: AutoOrFp32 = AutoOrFp32.auto
    primary_zero_shot: str | None = None
    probes: dict[str, Any] = field(default_factory=dict)  # name -> builder node (or null: dropped)
    headline: list[str] = field(default_factory=list)  # the protocol's headline metrics (summary.json)
    plot_metric: str | None = None  # the probe metric the report plots


@dataclass
class LoggerConfig:
    """``logger``: conf/logger/wandb.yaml says what each key does."""

    mode: LoggerMode = LoggerMode.offline
    project: str = "clipcl"
    entity: str | None = None
    group: str | None = None
    job_type: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    dir: str | None = None
    log_every_steps: int = 10
    system_stats: bool = False
    console: bool = False
    log_checkpoints: bool = False
    fields: dict[str, Any] | None = None  # filled by ``clipcl`` from Hydra (run_names.run_fields)


@dataclass
class Config:
    """The composed config (conf/config.yaml says what the top-level keys do)."""

    paths: Any = None
    model: Any = None
    method: Any = None
    tasks: Any = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    reference: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    part: Part = Part.whole
    resume: bool = False
    overwrite: bool = False
    resume_allow_config_change: bool = False


# Top-level tables that experiment presets add and method/trainer YAMLs read with ${oc.select:...}.
LOOKUP_TABLES = (
    "lr_by_method",
    "alpha_tables",
    "alpha_by_part",
    "temperature_by_method",
    "method_switches",
    "distill_weight",
    "we_every",
)


def schema_node() -> DictConfig:
    """``Config``'s nodes under an untyped root: typed keys, and room for a preset's lookup tables."""
    typed = OmegaConf.structured(Config)
    root = OmegaConf.create({})
    for item in fields(Config):
        root[item.name] = typed._get_node(item.name)
    return root


def register() -> None:
    """Store the schema as ``config_schema`` (conf/config.yaml's first default); idempotent."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=schema_node())


register()
