"""Checks of a composed config that need neither torch nor any data: they run before any work.

Types, choices and the keys of ``trainer``, ``eval``, ``logger`` and the top level are the schema's
(``config_schema``: Hydra refuses a wrong one while composing, and ``composition_problem`` words that
refusal as one line naming the key). ``validate`` refuses what a schema cannot say: ranges, rules
linking keys, unknown ``+key`` additions and unusable paths, with one message naming each key;
``identity`` is the part of a config that decides a run's results (what a resume must not change);
``config_diff`` lists the keys where two identities differ.
This module must stay import-light: ``clipcl`` calls it before torch is imported.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Settings a resumed run may change: where things are, how fast, how it is logged or stopped.
RESUMABLE_KEYS = (
    "paths",
    "logger",
    "hydra",
    "resume",
    "overwrite",
    "resume_allow_config_change",
    "trainer.device",
    "trainer.threads",
    "trainer.num_workers",
    "trainer.progress",
    "trainer.checkpoint",
    "trainer.checkpoint_every_steps",
    "trainer.keep_checkpoints",
    "trainer.stop_after_stage",
    "trainer.decoded_cache",
    "eval.decoded_cache",
    "eval.headline",  # what the summary and the report show first, not what is computed
    "eval.plot_metric",
)
# Values that are locations (they interpolate a path or the environment), wherever they sit.
LOCATION_MARKERS = ("${paths.", "${oc.env:", "${hydra:")


class ConfigError(ValueError):
    """A config value the user fixes; printed as a message, without a traceback."""


# -- identity ---------------------------------------------------------------------------------
def _strip(raw: Any, resolved: Any, prefix: str) -> Any:
    if isinstance(resolved, Mapping):
        raw = raw if isinstance(raw, Mapping) else {}
        kept = {}
        for key, value in resolved.items():
            dotted = f"{prefix}{key}"
            if dotted in RESUMABLE_KEYS:
                continue
            original = raw.get(key)
            if isinstance(original, str) and any(marker in original for marker in LOCATION_MARKERS):
                continue
            kept[key] = _strip(original, value, dotted + ".")
        return kept
    return resolved


def identity(cfg: DictConfig) -> dict:
    """The resolved config minus what may change on resume (``RESUMABLE_KEYS`` and path-valued keys),
    choices as plain strings (stored as JSON and in checkpoints, compared with identities made before)."""
    raw = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return _strip(raw, resolved, "")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def config_diff(before: Mapping, after: Mapping) -> list[str]:
    """``key: before -> after`` for each key whose value differs (``<absent>`` for a missing key)."""
    old, new = _flatten(before), _flatten(after)
    missing = "<absent>"
    return [
        f"{key}: {old.get(key, missing)!r} -> {new.get(key, missing)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key, missing) != new.get(key, missing)
    ]


# -- validation -------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _select(cfg: DictConfig, key: str, default: Any = None) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=default)
    except Exception as exc:  # noqa: BLE001 - an interpolation that cannot resolve
        raise ConfigError(f"{key}: cannot be resolved ({exc}).") from None


def _check_values(cfg: DictConfig) -> list[str]:
    """Ranges (the schema gives the types of trainer/eval/top-level keys; ``tasks`` and the optimiser
    are free-form, so their type is checked here too) and rules that link keys."""
    problems = []

    def integer(key: str, minimum: int, optional: bool = False) -> None:
        value = _select(cfg, key, default="__absent__")
        if value == "__absent__" or (optional and value is None):
            return
        if not _is_int(value) or value < minimum:
            problems.append(f"{key}={value!r}: must be an integer >= {minimum}.")

    def positive_number(key: str) -> None:
        value = _select(cfg, key, default="__absent__")
        if value == "__absent__" or value is None:
            return
        if not _is_number(value) or value <= 0:
            problems.append(f"{key}={value!r}: must be a number > 0 (e.g. {key}=1e-5).")

    integer("seed", 0)
    integer("trainer.batch_size", 1)
    integer("eval.batch_size", 1)
    integer("trainer.num_workers", 0)
    integer("trainer.threads", 1, optional=True)
    integer("trainer.checkpoint_every_steps", 1, optional=True)
    integer("trainer.stop_after_stage", 1, optional=True)
    integer("trainer.fp16_max_skipped_steps", 1)
    integer("tasks.num_stages", 1, optional=True)
    integer("tasks.epochs", 1, optional=True)
    integer("tasks.iterations", 1, optional=True)
    positive_number("trainer.optimizer.lr")
    positive_number("trainer.grad_clip_norm")
    min_scale = _select(cfg, "trainer.fp16_min_scale", default=0.0)
    if min_scale is None or not min_scale >= 0:
        problems.append(f"trainer.fp16_min_scale={min_scale!r}: must be a number >= 0 (fairseq: 1e-4).")
    if _select(cfg, "trainer.grad_clip_before_unscale", default=False) and not _select(cfg, "trainer.grad_clip_norm"):
        problems.append(
            "trainer.grad_clip_before_unscale=true clips gradients, but trainer.grad_clip_norm is not set: "
            "set trainer.grad_clip_norm (CL-CLIP: 1.0) or trainer.grad_clip_before_unscale=false."
        )
    model = _select(cfg, "model", default={}) or {}
    if "pretrain" in model and "synthetic_clip" not in str(model.get("_target_", "")):
        problems.append(
            "model.pretrain is set (by experiment=synthetic_* or an override) but only model=synthetic "
            "is pretrained here: drop the experiment preset or use model=synthetic."
        )
    return problems


def _check_additions(cfg: DictConfig, task_overrides: Iterable[str]) -> list[str]:
    """``+a.b=v`` adds key b under a: allowed below an instantiated node (a ``_target_``'s keyword
    arguments), refused elsewhere, where nothing reads it (a typo such as ``+trainer.batchsize``)."""
    problems = []
    for override in task_overrides:
        if not override.startswith("+") or "=" not in override:
            continue
        key = override.lstrip("+").split("=", 1)[0].strip()
        if "/" in key or key.startswith("hydra."):  # a config group append, or Hydra's own settings
            continue
        parent_key, _, leaf = key.rpartition(".")
        parent = _select(cfg, parent_key) if parent_key else cfg
        if isinstance(parent, DictConfig) and "_target_" in parent:
            continue
        siblings = [str(k) for k in parent.keys() if str(k) != leaf] if isinstance(parent, DictConfig) else []
        close = difflib.get_close_matches(leaf, siblings, n=1)
        hint = f" Did you mean {parent_key + '.' if parent_key else ''}{close[0]}=...?" if close else ""
        problems.append(f"{override}: the config has no key {key!r}, so nothing would read it.{hint}")
    return problems


def _check_paths(cfg: DictConfig) -> list[str]:
    problems = []
    cache = _select(cfg, "paths.cache_dir")
    if cache:
        try:
            Path(cache).mkdir(parents=True, exist_ok=True)
            if not os.access(cache, os.W_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as exc:
            problems.append(
                f"paths.cache_dir={cache}: cannot create or write {cache} ({exc.strerror or exc}). "
                "Set paths.cache_dir (or CLIPCL_CACHE) to a writable folder."
            )
    data = _select(cfg, "paths.data_dir")
    raw = OmegaConf.to_container(cfg, resolve=False)
    users = [
        key
        for key, value in _flatten({k: v for k, v in raw.items() if k != "paths"}).items()
        if isinstance(value, str) and "${paths.data_dir}" in value
    ]
    if data and users and not Path(data).is_dir():
        problems.append(
            f"paths.data_dir={data}: no such folder (read by {', '.join(users[:3])}). "
            "Set paths.data_dir (or CLIPCL_DATA) to the folder holding the datasets."
        )
    return problems


def validate(cfg: DictConfig, task_overrides: Iterable[str] = ()) -> None:
    """Raise one ``ConfigError`` listing every problem found, each naming its key."""
    problems = _check_values(cfg) + _check_additions(cfg, task_overrides) + _check_paths(cfg)
    if problems:
        raise ConfigError(invalid_config(problems))


def invalid_config(problems: list[str]) -> str:
    """The message of a refused config: one line per problem."""
    return "invalid config:\n" + "\n".join(f"  - {problem}" for problem in problems)


# -- Hydra's refusals, worded as ours ---------------------------------------------------------
_CONVERSIONS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def _schema_keys(parent_key: str) -> list[str]:
    """The keys the schema allows under ``parent_key`` ('' is the top level)."""
    from dataclasses import fields, is_dataclass
    from typing import get_type_hints

    from . import config_schema

    node: Any = config_schema.Config
    for part in parent_key.split(".") if parent_key else []:
        node = get_type_hints(node).get(part) if is_dataclass(node) else None
    if not is_dataclass(node):
        return []
    extra = config_schema.LOOKUP_TABLES if node is config_schema.Config else ()
    return [item.name for item in fields(node)] + list(extra)


def composition_problem(error: Exception) -> str:
    """Hydra's refusal to compose the config (an unknown group option, a value the schema refuses, an
    unknown key) as one of our problems: a line naming the key, the value and what is allowed."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(error, MissingConfigException):
        missing = re.search(r"Could not find '([^']+)'", str(error))
        if missing and error.options:
            group, _, option = missing.group(1).rpartition("/")
            return (
                f"{group}={option}: Could not find '{missing.group(1)}'. "
                f"Available options in '{group}': {', '.join(error.options)}."
            )
        return str(error).strip().splitlines()[0]
    cause = error.__cause__
    key = getattr(cause, "full_key", None) if isinstance(cause, OmegaConfBaseException) else None
    if not key:
        return " ".join(str(error).split())
    reason = str(cause).splitlines()[0]
    choice = re.fullmatch(r"Invalid value '(.*)', expected one of \[(.*)\]", reason)
    conversion = re.fullmatch(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", reason)
    boolean = re.fullmatch(r"Value '(.*)' is not a valid bool \(type (\w+)\)", reason)
    unknown = re.fullmatch(r"Key '(.*)' (?:not in '\w+'|is not in struct)", reason)
    if choice:
        allowed = [value.strip() for value in choice.group(2).split(",")]
        return f"{key}={choice.group(1)!r}: must be one of {allowed}."
    if conversion or boolean:
        value, kind, target = conversion.groups() if conversion else (*boolean.groups(), "Boolean")  # type: ignore[union-attr]
        shown = repr(value) if kind == "str" else value  # as the user wrote it: 'abc' but 2.5
        return f"{key}={shown}: must be {_CONVERSIONS.get(target, target)}."
    if unknown:
        parent_key, _, leaf = key.rpartition(".")
        close = difflib.get_close_matches(leaf, _schema_keys(parent_key), n=1)
        hint = f" Did you mean {parent_key + '.' if parent_key else ''}{close[0]}=...?" if close else ""
        return f"{key}: the config has no such key.{hint}"
    return f"{key}: {reason}"


# -- run folder names -------------------------------------------------------------------------
def unique_suffix() -> str:
    """A run folder name's last part: the SLURM job (and array task) id inside a job, else 6 random
    hex digits, so two runs started in the same second never share a folder. Under torchrun every
    rank composes its own config: the suffix then comes from the launch (TORCHELASTIC_RUN_ID, the same
    on every rank, and the rendezvous address), so that all ranks name the same folder."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if job:
        return f"j{job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"j{os.environ['SLURM_JOB_ID']}"
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        import hashlib

        # the run id is a fresh uuid per launch, or the user's --rdzv_id ("none" by default in older torch)
        launch = "|".join(os.environ.get(key, "") for key in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT"))
        return "t" + hashlib.sha1(launch.encode()).hexdigest()[:6]
    return os.urandom(3).hex()


# Cached like Hydra's ${now:}: one value per composed config, copied into a sweep's jobs.
if not OmegaConf.has_resolver("clipcl.unique"):
    OmegaConf.register_new_resolver("clipcl.unique", unique_suffix, use_cache=True)
