"""How a run is named and grouped from its Hydra overrides: used by ``clipcl`` (W&B name, group, tags,
config fields) and by the report (which overrides make a group). Plain Python, no pandas, no torch:
``clipcl`` imports it before it knows the config is valid, in images without the report's packages.

The rule: an override is part of a run's identity unless it says where or how the run executed
(paths, logger, hydra, threads, workers, progress, checkpoints, resume: ``config_checks.RESUMABLE_KEYS``,
the settings a resumed run may change because they never change its numbers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import cast

from omegaconf import OmegaConf

from .config_checks import RESUMABLE_KEYS

# Overrides that are never swept options: seed and method have columns of their own; the rest change
# where or how a run executes, not what it computes.
IGNORED_OVERRIDES = (
    "seed",
    "method",
    "trainer.keep_checkpoints",
    *(key for key in RESUMABLE_KEYS if "." in key or key in ("resume", "overwrite", "resume_allow_config_change")),
)
# Groups whose every key (``group.key`` and ``group/key``) is ignored.
IGNORED_OVERRIDE_GROUPS = ("hydra", "logger", "paths")
SWEEP_NAME_DEFAULT = "sweep"


def is_ignored_override(key: str) -> bool:
    """True for overrides that say where or how a run executed (paths, logger, threads, ...), not what it computed."""
    key = key.lstrip("+~")
    return key in IGNORED_OVERRIDES or any(
        key == group or key.startswith((group + ".", group + "/")) for group in IGNORED_OVERRIDE_GROUPS
    )


def parse_overrides(overrides: Iterable[str] | None) -> dict[str, str]:
    """``["method=lwf", "+method.alpha=0.5", "~x"]`` -> ``{"method": "lwf", "method.alpha": "0.5", "x": "~"}``
    (values stay strings, so grouping is exact)."""
    parsed: dict[str, str] = {}
    for item in overrides or []:
        key, sep, value = str(item).partition("=")
        deleted = key.startswith("~")
        key = key.lstrip("+~").strip()
        parsed[key] = value.strip() if sep else ("~" if deleted else "")
    return parsed


def swept_overrides(overrides: Iterable[str] | None) -> dict[str, str]:
    """The overrides that change what a run computes, but the experiment preset (W&B's ``preset`` field):
    the W&B name's and ``swept`` field's options."""
    return {
        key: value
        for key, value in parse_overrides(overrides).items()
        if not is_ignored_override(key) and key != "experiment"
    }


def run_name(method: str, seed: object, overrides: Iterable[str] | None) -> str:
    """'lwf-s0 method.alpha=0.5': method, seed and the run's own swept overrides."""
    extra = [f"{key}={value}" for key, value in swept_overrides(overrides).items()]
    return " ".join([f"{method}-s{seed}", *extra])


def _tag(text: str) -> str:
    """W&B tags are at most 64 characters; keep them readable."""
    return str(text)[:64]


def run_fields(choices: Mapping[str, object], overrides: Iterable[str] | None, method: str) -> dict:
    """The fields W&B groups and filters by: ``preset`` (the experiment file, or "none"), ``task_sequence``
    (the tasks file), ``method`` and ``swept`` (override -> value)."""
    return {
        "preset": str(choices.get("experiment") or "none"),
        "task_sequence": str(choices.get("tasks") or "none"),
        "method": str(method),
        "swept": swept_overrides(overrides),
    }


def run_tags(fields: Mapping[str, object]) -> list[str]:
    """Tags for every run: ``preset:<x>``, ``tasks:<x>``, ``method:<x>`` and one ``key=value`` per swept override."""
    tags = [f"preset:{fields['preset']}", f"tasks:{fields['task_sequence']}", f"method:{fields['method']}"]
    swept = cast(Mapping[str, object], fields.get("swept") or {})
    tags += [f"{key}={value}" for key, value in swept.items()]
    return [_tag(tag) for tag in tags]


def sweep_name(experiment: object = None) -> str:
    """The first part of a sweep folder's name: its experiment preset (file-safe), else "sweep"."""
    name = str(experiment) if experiment not in (None, "", "None", "null") else SWEEP_NAME_DEFAULT
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or SWEEP_NAME_DEFAULT


# ${clipcl.sweep_name:${hydra.runtime.choices.experiment}} in conf/hydra/default.yaml's sweep.dir.
if not OmegaConf.has_resolver("clipcl.sweep_name"):
    OmegaConf.register_new_resolver("clipcl.sweep_name", sweep_name, use_cache=True)
