"""Checks of a composed config that need neither torch nor any data: they run before any work.

``validate`` refuses wrong types and ranges, unknown ``+key`` additions and unusable paths with
one message naming each key; ``identity`` is the part of a config that decides a run's results
(what a resume must not change); ``config_diff`` lists the keys where two identities differ.
This module must stay import-light: ``clipcl`` calls it before torch is imported.
"""

from __future__ import annotations

import difflib
import os
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
    """The resolved config minus what may change on resume (``RESUMABLE_KEYS`` and path-valued keys)."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    resolved = OmegaConf.to_container(cfg, resolve=True)
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
    integer("tasks.num_stages", 1, optional=True)
    integer("tasks.epochs", 1, optional=True)
    integer("tasks.iterations", 1, optional=True)
    positive_number("trainer.optimizer.lr")
    positive_number("trainer.grad_clip_norm")
    for key in ("resume", "overwrite", "resume_allow_config_change"):
        value = _select(cfg, key, default=False)
        if not isinstance(value, bool):
            problems.append(f"{key}={value!r}: must be true or false.")
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


def validate(cfg: DictConfig, task_overrides: Iterable[str] = (), choices: Mapping[str, Iterable] = ()) -> None:
    """Raise one ``ConfigError`` listing every problem found, each naming its key."""
    problems = []
    for key, allowed in dict(choices).items():
        value = _select(cfg, key)
        if value not in allowed:
            problems.append(f"{key}={value!r}: must be one of {list(allowed)}.")
    problems += _check_values(cfg) + _check_additions(cfg, task_overrides) + _check_paths(cfg)
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  - {problem}" for problem in problems))


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
