"""Console entry points: ``clipcl`` (one run, or a sweep with ``-m``) and ``clipcl-pretrain``.

The config is checked before torch is even imported (``config_checks``): a wrong value fails in
about a second with a message naming the key. Errors the user fixes (a config value, a busy or
foreign run folder, a corrupt checkpoint, missing weights) print as a message without a traceback
and exit with status 2.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from . import run_names  # registers ${clipcl.sweep_name:} (the sweep folder) before Hydra resolves it
from .config_checks import ConfigError, composition_problem, config_diff, identity, invalid_config, validate

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
USER_ERROR_EXIT = 2
log = logging.getLogger(__name__)


def fill_run_identity(cfg: DictConfig) -> None:
    """W&B group = the sweep (its folder name: preset + time) and name = method, seed and the run's other
    overrides, unless the config sets them; ``logger.fields`` (preset, task sequence, method, swept
    overrides) become W&B config fields and tags (run_names)."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    fields = run_names.run_fields(hydra_cfg.runtime.choices, overrides, cfg.method.name)
    with open_dict(cfg):
        if cfg.logger.group is None and hydra_cfg.mode == RunMode.MULTIRUN:
            cfg.logger.group = Path(hydra_cfg.sweep.dir).name
        if cfg.logger.name == f"{cfg.method.name}-s{cfg.seed}":
            cfg.logger.name = run_names.run_name(cfg.method.name, cfg.seed, overrides)
        cfg.logger.fields = fields


def hydra_files(cfg: DictConfig) -> dict[str, str]:
    """What Hydra would save in ``.hydra/`` (disabled in conf/hydra/default.yaml): written by the runner
    only once it owns the run folder, so a refused run never replaces the config of the run it met."""
    hydra_cfg = HydraConfig.get()
    return {
        ".hydra/config.yaml": OmegaConf.to_yaml(cfg),
        ".hydra/overrides.yaml": OmegaConf.to_yaml(hydra_cfg.overrides.task),
        ".hydra/hydra.yaml": OmegaConf.to_yaml({"hydra": hydra_cfg}),
    }


def precheck_folder(cfg: DictConfig, run_dir: Path) -> None:
    """The run folder refusals that need no torch, so they come in a second: the folder is busy, holds
    another run, or its checkpoint's config (``checkpoints/identity.json``) differs from a resume's.
    The runner checks again under the folder's lock, against the checkpoint itself."""
    from . import requeue, run_folder

    resume = bool(cfg.resume) or requeue.requeued(run_dir)  # a SLURM or local-launcher requeue continues
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if several or not run_dir.is_dir():  # data-parallel ranks: rank 0 checks, in the runner
        return
    run_folder.RunLock(run_dir).acquire().release()  # raises RunFolderBusy naming the holder
    existing = run_folder.previous_run(run_dir)
    if existing and not resume and not cfg.overwrite:
        raise run_folder.existing_run_error(run_dir, existing)
    if resume and not cfg.resume_allow_config_change:
        stored = run_folder.read_json(run_folder.checkpoint_path(run_dir, run_folder.IDENTITY))
        differences = config_diff(stored, identity(cfg)) if stored else []
        if differences:
            raise run_folder.changed_config_error(run_dir, differences)


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean "fix your input", printed without a traceback."""
    from .run_folder import RunFolderError

    types: list[type[BaseException]] = [ConfigError, RunFolderError]
    # Looked up only when their module was loaded by the run (importing them here would cost seconds).
    for module, names in (
        ("clipcl_runner.models", ("PretrainedWeightsMissing",)),
        ("clipcl_runner.data.errors", ("DatasetMissing", "DataFormatError", "CorruptImage")),
    ):
        loaded = sys.modules.get(module)
        types += [getattr(loaded, name) for name in names if loaded is not None and hasattr(loaded, name)]
    return tuple(types)


def user_error(error: BaseException) -> BaseException | None:
    """The "fix your input" error behind ``error``: itself, or the cause Hydra's ``instantiate`` wrapped
    (a model or dataset builder raising ``PretrainedWeightsMissing`` reaches us as InstantiationException)."""
    types = user_error_types()
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, types):
            return seen
        seen = seen.__cause__
    return None


def refuse(message: str) -> NoReturn:
    print(f"clipcl: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(USER_ERROR_EXIT)


OUTPUT_KEYS = ("paths.output_dir", "hydra.run.dir", "hydra.sweep.dir")


def check_output_paths(argv: list[str]) -> None:
    """Hydra creates the run folder before our code runs, with a traceback when it cannot: check the
    output folders given on the command line (or CLIPCL_OUTPUTS) first, naming the key and path."""
    given = [("CLIPCL_OUTPUTS", os.environ["CLIPCL_OUTPUTS"])] if os.environ.get("CLIPCL_OUTPUTS") else []
    given += [
        (key, value)
        for key, _, value in (arg.lstrip("+").partition("=") for arg in argv if "=" in arg)
        if key in OUTPUT_KEYS
    ]
    for key, value in given:
        if not value or "${" in value or "," in value:
            continue
        path = Path(value)
        try:
            path.mkdir(parents=True, exist_ok=True)
            if not os.access(path, os.W_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as error:
            refuse(
                f"{key}={value}: cannot create or write {path} ({error.strerror or error}).\n"
                "Fix: choose a folder you can write."
            )


@contextlib.contextmanager
def config_refusals() -> Iterator[None]:
    """Hydra prints its refusal to compose the config (an unknown group option; a value, type or key the
    schema refuses) with its search path and exits 1: ``clipcl`` words it as one line naming the key and
    the allowed values, and exits 2, as for its own checks. Hydra has no hook for this, so its reporter
    (``hydra._internal.utils.run_and_report``) is wrapped while ``clipcl`` runs; HYDRA_FULL_ERROR=1
    still gives Hydra's traceback."""
    from hydra._internal import utils as hydra_utils
    from hydra.errors import ConfigCompositionException, OverrideParseException

    report = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        def composed() -> Any:
            try:
                return func()
            except (ConfigCompositionException, OverrideParseException) as error:
                if os.environ.get("HYDRA_FULL_ERROR"):
                    raise
                refuse(invalid_config([composition_problem(error)]))

        return report(composed)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = report


def check_command_line(argv: list[str]) -> None:
    """What Hydra would take silently or answer with a traceback: two experiment presets given as two
    overrides (the last one wins: ``experiment=a experiment=b`` runs b alone, where a preset is a delta
    meant to combine) and ``--cfg`` together with ``-m``. Any other key given twice keeps Hydra's rule,
    the last wins, which scripts appending overrides (``logger=none``, ``seed=3``) rely on."""
    presets = [arg for arg in argv if arg.lstrip("+").split("=", 1)[0] == "experiment" and "=" in arg]
    if len(presets) > 1:
        refuse(
            f"experiment is chosen {len(presets)} times ({' '.join(presets)}); Hydra would silently keep the "
            "last. To apply several presets in order, list them: experiment=[a,b]."
        )
    if {"-m", "--multirun"} & set(argv) and {"-c", "--cfg"} & set(argv):
        refuse(
            "--cfg prints one run's config and cannot be combined with -m. Preview a sweep's jobs with "
            "`clipcl-preflight -m <the same overrides>`, or one job's config with `clipcl <its overrides> --cfg job`."
        )


def main() -> dict | None:
    """``clipcl``: the command line and the output folders are checked before Hydra creates the run folder."""
    check_command_line(sys.argv[1:])
    check_output_paths(sys.argv[1:])
    with config_refusals():
        return run_main()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def run_main(cfg: DictConfig) -> dict | None:
    from .preemption import catch_early_stops

    catch_early_stops()  # a scancel while the job starts (submitit only logs SIGTERM) stops it before work
    try:
        validate(cfg, HydraConfig.get().overrides.task)  # types and choices: the schema, while Hydra composed
    except ConfigError as error:
        refuse(str(error))
    fill_run_identity(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        precheck_folder(cfg, run_dir)
        from .runner import run  # torch and open_clip load only once the config is known to be valid

        return run(cfg, run_dir, record=hydra_files(cfg))
    except KeyboardInterrupt:  # Ctrl-C before training started (training itself checkpoints and exits)
        print(f"clipcl: interrupted; the run folder {run_dir} keeps its last checkpoint.", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        cause = user_error(error)
        if cause is None or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # a sweep's job fails alone (one line + its log, sweep_report); an exit would end the sweep
        refuse(str(cause))
    finally:
        from .console import drop_rank_folder

        drop_rank_folder(run_dir)  # torchrun/srun: a rank's own (empty) folder, not the run's


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def pretrain_main(cfg: DictConfig) -> None:
    """Pretrain (or find in the cache) the synthetic CLIP of ``model=synthetic`` and print its path."""
    if "pretrain" not in cfg.model:
        refuse(f"model={HydraConfig.get().runtime.choices.model} has nothing to pretrain; use model=synthetic.")
    from .synthetic_clip import ensure_checkpoint

    path = ensure_checkpoint(
        OmegaConf.to_container(cfg.model.pretrain, resolve=True), cfg.model.cache_dir, progress=cfg.trainer.progress
    )
    print(path)


if __name__ == "__main__":
    main()
