"""The config schema (clipcl_runner/config_schema.py): every preset and method composes onto it, Hydra
refuses a wrong value, type or key naming it (before torch is imported), and choices stay plain strings
wherever the config is written out or compared with a run made before the schema."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from conftest import CONFIG_DIR, TEST_PRESET, compose_config
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from clipcl_runner import config_schema
from clipcl_runner.config_checks import composition_problem, config_diff, identity
from clipcl_runner.config_schema import Config, EvalConfig, LoggerConfig, TrainerConfig

CONF = Path(CONFIG_DIR)
PRESETS = [None, *sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))]
METHODS = sorted(path.stem for path in (CONF / "method").glob("*.yaml"))
TYPED = {"trainer": TrainerConfig, "eval": EvalConfig, "logger": LoggerConfig}


def names(schema: type) -> set[str]:
    return {item.name for item in fields(schema)}


def yaml_keys(path: Path, node: str) -> set[str]:
    """The keys a YAML file sets under ``node``: the whole file for an option of that group, the node's
    entry for a file placed at the top level (``@package _global_``: experiment presets)."""
    text = path.read_text()
    data = yaml.safe_load(text) or {}
    if path.parent.name != node:
        data = data.get(node) or {} if "@package _global_" in text else {}
    return {key for key in data if key != "defaults"}


@pytest.mark.parametrize("node", sorted(TYPED))
def test_every_key_a_yaml_file_sets_is_a_schema_field(node):
    """Read from the YAML files themselves, not through Hydra: every file of conf/ that sets keys of the node."""
    found = {(path.relative_to(CONF).as_posix(), key) for path in CONF.rglob("*.yaml") for key in yaml_keys(path, node)}
    assert len({key for _, key in found}) >= 10  # the reading works
    assert any(file.startswith("experiment/") for file, _ in found) or node == "eval"
    assert sorted((file, key) for file, key in found if key not in names(TYPED[node])) == []


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_and_method_composes_onto_the_schema(preset):
    top_level = names(Config) | set(config_schema.LOOKUP_TABLES)
    for method in METHODS:
        cfg = compose_config(*([f"experiment={preset}"] if preset else []), f"method={method}")
        for node, schema in TYPED.items():
            assert OmegaConf.get_type(cfg[node]) is schema, (preset, method, node)
            assert set(cfg[node]) == names(schema), (preset, method, node)  # nothing missing, nothing extra
        assert set(cfg) - top_level == set(), (preset, method)
        assert names(Config) <= set(cfg)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves against the typed nodes


# The refusal a user sees, derived by hand from conf/ and the schema's choices.
REFUSED = [
    ("trainer.precision=fp8", "trainer.precision='fp8': must be one of ['auto', 'bf16', 'fp16', 'fp32']."),
    ("trainer.teacher_precision=bf16", "trainer.teacher_precision='bf16': must be one of ['auto', 'fp32']."),
    ("trainer.train_head=all", "trainer.train_head='all': must be one of ['stage', 'seen']."),
    ("eval.task_head=every", "eval.task_head='every': must be one of ['stage', 'seen', 'all']."),
    ("eval.precision=fp16", "eval.precision='fp16': must be one of ['auto', 'fp32']."),
    ("eval.retrieval_ties=random", "eval.retrieval_ties='random': must be one of ['official', 'optimistic']."),
    (
        "logger.mode=loud",
        "logger.mode='loud': must be one of ['online', 'offline', 'shared', 'disabled', 'none', 'off'].",
    ),
    ("part=both", "part='both': must be one of ['whole', 'image', 'text']."),
    ("trainer.batch_size=abc", "trainer.batch_size='abc': must be an integer."),
    ("trainer.batch_size=2.5", "trainer.batch_size=2.5: must be an integer."),
    ("eval.batch_size=many", "eval.batch_size='many': must be an integer."),
    ("logger.log_every_steps=often", "logger.log_every_steps='often': must be an integer."),
    ("trainer.fp16_min_scale=tiny", "trainer.fp16_min_scale='tiny': must be a number."),
    ("trainer.tf32=maybe", "trainer.tf32='maybe': must be true or false."),
    ("resume=maybe", "resume='maybe': must be true or false."),
    ("seed=abc", "seed='abc': must be an integer."),
    ("trainer.batchsize=8", "trainer.batchsize: the config has no such key. Did you mean trainer.batch_size=...?"),
    ("eval.headlines=[a]", "eval.headlines: the config has no such key. Did you mean eval.headline=...?"),
    ("logger.projekt=x", "logger.projekt: the config has no such key. Did you mean logger.project=...?"),
    ("sed=1", "sed: the config has no such key. Did you mean seed=...?"),
    ("method=nope", "method=nope: Could not find 'method/nope'. Available options in 'method': "),
]


@pytest.mark.parametrize("override, message", REFUSED)
def test_hydra_refuses_a_wrong_value_type_or_key_naming_it(override, message):
    with pytest.raises(ConfigCompositionException) as refused:
        compose_config(*TEST_PRESET, override)
    assert composition_problem(refused.value).startswith(message)


def test_an_unknown_method_lists_every_method():
    with pytest.raises(ConfigCompositionException) as refused:
        compose_config("method=nope")
    assert composition_problem(refused.value).endswith(": " + ", ".join(METHODS) + ".")


@pytest.mark.parametrize(
    "override, named",
    [
        ("method=nope", "Available options in 'method': finetune, geodl"),
        ("trainer.precision=fp8", "trainer.precision='fp8': must be one of ['auto', 'bf16', 'fp16', 'fp32']"),
        ("part=foo", "part='foo': must be one of ['whole', 'image', 'text']"),
        ("trainer.batch_size=abc", "trainer.batch_size='abc': must be an integer"),
        ("logger.projekt=x", "Did you mean logger.project"),
    ],
)
def test_the_cli_refuses_before_torch_in_one_line(override, named, tmp_path):
    from test_faults import refused  # exit 2, no traceback, torch not imported

    stderr, elapsed = refused(override, f"paths.output_dir={tmp_path}")
    problems = [line for line in stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1 and named in problems[0], stderr
    assert "Hydra" not in stderr and "full_key" not in stderr, stderr
    assert elapsed < 5, f"refusing {override} took {elapsed:.1f} s"  # ~0.7 s on an idle 2-core machine


def test_choices_compare_format_and_hash_as_their_strings():
    cfg = compose_config(*TEST_PRESET, "trainer.precision=bf16", "part=image")
    precision = cfg.trainer.precision
    assert isinstance(precision, config_schema.Precision)  # typed by the schema...
    assert precision == "bf16" and f"{precision}" == "bf16" and str(precision) == "bf16"  # ...yet a string
    assert {"bf16": 1}[precision] == 1 and precision in ("auto", "bf16") and cfg.part != "whole"
    assert json.dumps({"p": precision}) == '{"p": "bf16"}'
    for choice in (
        config_schema.Part,
        config_schema.Precision,
        config_schema.AutoOrFp32,
        config_schema.TrainHead,
        config_schema.TaskHead,
        config_schema.RetrievalTies,
        config_schema.KeepCheckpoints,
        config_schema.LoggerMode,
    ):
        assert all(member.name == member.value == str(member) for member in choice), choice


def plain(value) -> bool:
    if isinstance(value, dict):
        return all(type(key) is str and plain(item) for key, item in value.items())
    if isinstance(value, list):
        return all(plain(item) for item in value)
    return value is None or type(value) in (str, int, float, bool)


def test_identity_holds_plain_strings_and_matches_one_stored_before_the_schema():
    cfg = compose_config(*TEST_PRESET, "trainer.precision=fp32", "eval.task_head=seen")
    now = identity(cfg)
    assert plain(now), now  # JSON (identity.json) and weights_only checkpoints take it as it is
    assert now["part"] == "whole" and now["trainer"]["precision"] == "fp32" and now["eval"]["task_head"] == "seen"
    stored = json.loads(json.dumps(now))  # as checkpoints/identity.json holds it: plain strings
    assert config_diff(stored, now) == []
    # keys new with the schema change what is shown, not computed: an identity stored before lacks them
    assert not {"headline", "plot_metric"} & set(now["eval"]) and "fields" not in now.get("logger", {})
    changed = identity(compose_config(*TEST_PRESET, "trainer.precision=fp32", "eval.task_head=all"))
    assert config_diff(stored, changed) == ["eval.task_head: 'seen' -> 'all'"]


def test_the_schema_agrees_with_the_modules_that_use_the_choices():
    from clipcl_runner.evaluation import TASK_HEADS
    from clipcl_runner.methods.base import TEACHER_PRECISIONS, TRAIN_HEADS
    from clipcl_runner.models import PARTS
    from clipcl_runner.precision import EVAL_PRECISIONS, PRECISIONS
    from clipcl_runner.retrieval import TIES
    from clipcl_runner.tracking import _NO_WANDB_MODES, _WANDB_MODES

    def values(choice) -> tuple[str, ...]:
        return tuple(member.value for member in choice)

    assert values(config_schema.Part) == PARTS
    assert values(config_schema.Precision) == PRECISIONS
    assert values(config_schema.AutoOrFp32) == EVAL_PRECISIONS == TEACHER_PRECISIONS
    assert values(config_schema.TaskHead) == TASK_HEADS
    assert values(config_schema.TrainHead) == TRAIN_HEADS
    assert values(config_schema.RetrievalTies) == TIES
    # tracking also takes logger.mode=false (a YAML boolean); the schema takes the named modes
    assert set(values(config_schema.LoggerMode)) == (_WANDB_MODES | _NO_WANDB_MODES) - {"false"}


def test_the_trainer_defaults_are_the_yaml_values():
    """``TrainSettings()`` (the trainer's tests) is the default config's trainer, builders aside."""
    default = OmegaConf.to_object(compose_config().trainer)
    built = TrainerConfig()
    differ = [item.name for item in fields(TrainerConfig) if getattr(default, item.name) != getattr(built, item.name)]
    assert differ == ["optimizer"]
