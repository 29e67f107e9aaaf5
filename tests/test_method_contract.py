"""The method contract, for every method in every setting it supports.

Parametrised over every ``conf/method/*.yaml`` (a new method file and its YAML are picked up
automatically) x ``trainer.train_head`` x ``part``. Each case drives the stage loop's calls
(``setup``, ``begin_stage``, ``training_stage``, the trainer's steps with ``after_step``,
``end_stage``) over two stages of a random-init tiny open_clip model and checks what every method
promises: labels in range, finite losses, frozen parameters unchanged, teachers without
gradients, and a mid-stage ``state_dict`` round trip that continues with exactly the losses of
an uninterrupted run. Settings a method declares unsupported must be refused at start.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json

import pytest
import torch
from conftest import REPO, compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

METHODS = sorted(path.stem for path in (REPO / "conf" / "method").glob("*.yaml"))
HEADS = ("stage", "seen")
PARTS = ("whole", "image", "text")
STEPS = 2  # optimiser steps per stage: the resumed run continues after the first
BATCH = 4
# The smallest CLIP open_clip builds that every method can run: a 1-block ViT on 32-pixel images
# (the synthetic reference set's size) and a 1-block text tower, 16 wide. Speed is the point here.
NANO = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "patch_size": 16, "head_width": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """One random-init nano CLIP bundle (open_clip's real model classes, transforms and tokenizer)."""
    import open_clip

    from clipcl_runner.models import load_open_clip

    config = tmp_path_factory.mktemp("model_config") / "ContractCLIP-Nano.json"
    config.write_text(json.dumps(NANO))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    return load_open_clip("ContractCLIP-Nano", pretrained=None)


def two_stages():
    from clipcl_runner.data.stages import Stage, TensorImages

    generator = torch.Generator().manual_seed(1)
    stages = []
    for index in range(2):
        images = torch.randn(8, 3, 32, 32, generator=generator)
        data = TensorImages(images, torch.arange(8) % 2)
        stages.append(Stage(f"T{index + 1}", [f"shape{index}a", f"shape{index}b"], data, data, iterations=STEPS))
    return stages


@functools.cache
def composed(name: str):
    """The method's own config as the runner composes it (a small synthetic reference set: the contract
    needs its shape, not its size)."""
    return compose_config("experiment=synthetic_test", f"method={name}", "reference.num_images=16")


def method_config(name: str, head: str, part: str):
    cfg = copy.deepcopy(composed(name))
    cfg.part, cfg.trainer.train_head = part, head  # interpolations (alpha per part) resolve lazily
    return cfg


def new_run(clip, cfg):
    from clipcl_runner.methods.base import RunContext

    bundle = dataclasses.replace(clip, model=copy.deepcopy(clip.model))  # tokenizer and transforms are shared
    return RunContext(
        model=bundle.model,
        tokenizer=bundle.tokenizer,
        device=torch.device("cpu"),
        stages=two_stages(),
        part=cfg.part,
        train_logit_scale=cfg.trainer.train_logit_scale,
        train_head=cfg.trainer.train_head,
        label_smoothing=cfg.trainer.label_smoothing,
        clip=bundle,
    )


class Driver:
    """The stage loop's calls, as ``runner.StageLoop`` makes them, recording every step's loss."""

    def __init__(self, clip, cfg):
        from clipcl_runner.trainer import TrainSettings

        torch.manual_seed(cfg.seed)
        self.cfg, self.run = cfg, new_run(clip, cfg)
        self.method = instantiate(cfg.method, _convert_="all")
        self.parameters = self.method.setup(self.run)
        self.settings = TrainSettings(batch_size=BATCH, progress=False)
        self.losses: list[list[float]] = [[], []]
        self.totals: list[int | None] = [None, None]
        self.snapshots: dict[str, dict] = {}

    def snapshot(self, training=None) -> dict:
        state = {"model": self.run.model.state_dict(), "method": self.method.state_dict()}
        if training is not None:
            state["training"] = training.state_dict()
        return copy.deepcopy(state)

    def begin(self, index: int) -> None:
        torch.manual_seed(1000 + index)
        self.run.stage_index = index
        self.method.begin_stage(self.run)
        self.run.train_stage = self.method.training_stage(self.run)

    def train(self, index: int, stop_after: int | None = None, state: dict | None = None, snapshot_at=None):
        from clipcl_runner.trainer import StageTraining

        if not self.method.trains or self.run.train_stage is None:
            return None
        make_optimizer = functools.partial(torch.optim.SGD, lr=0.5)
        training = StageTraining(
            self.run, self.method, self.parameters, make_optimizer, None, self.settings, seed=index + 1
        )
        self.totals[index] = training.total
        if state is not None:
            self.run.model.load_state_dict(state["model"])
            self.method.load_state_dict(state["method"])
            training.load_state_dict(state["training"])
        seen = {"loss": training.sums.get("loss", 0.0)}

        def record(stage_training) -> None:
            total = stage_training.sums["loss"]
            self.losses[index].append(float(total) - float(seen["loss"]))
            seen["loss"] = total
            if stage_training.step == snapshot_at:  # what a mid-stage checkpoint holds
                self.snapshots[index] = self.snapshot(stage_training)

        training.run(record)
        return training

    def stage(self, index: int, snapshot_at=None) -> None:
        self.begin(index)
        self.train(index, snapshot_at=snapshot_at)
        self.method.end_stage(self.run)


def supported(method, cfg) -> bool:
    from clipcl_runner.methods.base import check_supported

    try:
        check_supported(method, cfg)
    except ValueError:
        return False
    return True


CASES = [(name, head, part) for name in METHODS for head in HEADS for part in PARTS]


@pytest.mark.parametrize("name,head,part", CASES, ids=[f"{n}-{h}-{p}" for n, h, p in CASES])
def test_method_contract(tiny_clip, name, head, part):
    from clipcl_runner.methods.base import check_supported

    cfg = method_config(name, head, part)
    method = instantiate(cfg.method, _convert_="all")
    if not supported(method, cfg):
        with pytest.raises(ValueError, match=f"'{name}' does not support"):
            check_supported(method, cfg)
        return

    # Two stages without interruption, keeping what a mid-stage checkpoint would hold after each stage's step 1.
    plain = Driver(tiny_clip, cfg)
    start = {key: value.detach().clone() for key, value in plain.run.model.named_parameters()}
    frozen = {key for key, parameter in plain.run.model.named_parameters() if not parameter.requires_grad}
    for index in range(2):
        plain.stage(index, snapshot_at=1)
        if index == 0:
            stage_end = plain.snapshot()
        stage = plain.run.train_stage
        if stage is not None:
            labels = torch.as_tensor([int(stage.train[i][1]) for i in range(len(stage.train))])
            assert 0 <= labels.min() and labels.max() < len(stage.classnames), "labels out of the stage's head"
    assert all(torch.isfinite(torch.tensor(losses)).all() for losses in plain.losses if losses)
    for losses, total in zip(plain.losses, plain.totals):
        assert len(losses) == (total or 0), f"{name}: a step callback per optimiser step"
    after = dict(plain.run.model.named_parameters())
    for key in frozen & set(after):
        assert torch.equal(after[key], start[key]), f"{name}: the frozen parameter {key} changed"
    if plain.method.trains and any(plain.losses):
        assert any(not torch.equal(after[key], start[key]) for key in set(start) - frozen), f"{name}: nothing trained"
    for teacher in teachers(plain.method, plain.run.model):
        assert not any(p.requires_grad or p.grad is not None for p in teacher.parameters()), f"{name}: a teacher trains"

    if not plain.snapshots:
        return
    # Rebuilt from scratch and resumed from the mid-stage state of the last stage that trains (the second,
    # or the first for joint training): the same losses after the cut.
    index = max(plain.snapshots)
    resumed = Driver(tiny_clip, cfg)
    if index == 1:
        resumed.run.model.load_state_dict(stage_end["model"])
        resumed.method.load_state_dict(stage_end["method"])
    resumed.begin(index)
    resumed.train(index, state=plain.snapshots[index])
    expected = plain.losses[index][1:]
    assert len(expected) == plain.totals[index] - 1
    assert resumed.losses[index] == pytest.approx(expected, rel=1e-5, abs=1e-6), f"{name}: resume is not exact"


def teachers(method, model) -> list[torch.nn.Module]:
    """Frozen models a method holds (any nn.Module attribute that is not the trained model)."""
    return [value for value in vars(method).values() if isinstance(value, torch.nn.Module) and value is not model]


@pytest.mark.parametrize("name", METHODS)
def test_method_config_composes_and_names_its_file(name):
    cfg = composed(name)
    assert cfg.method.name == name, f"conf/method/{name}.yaml: name must be '{name}'"
    OmegaConf.to_container(cfg.method, resolve=True)  # every default resolves


def test_unsupported_settings_are_refused_naming_the_method_the_setting_and_what_it_supports():
    from clipcl_runner.methods.base import Method, Support, check_supported

    class StageOnly(Method):
        supports = Support(train_head=("stage",), part=("whole",), compile=False)

    method = StageOnly("stage_only")
    cfg = OmegaConf.create({"part": "text", "trainer": {"train_head": "seen", "compile": True}})
    with pytest.raises(ValueError) as refused:
        check_supported(method, cfg)
    message = str(refused.value)
    for text in (
        "'stage_only'",
        "trainer.train_head=seen",
        "it supports stage",
        "part=text",
        "it supports whole",
        "trainer.compile=true",
    ):
        assert text in message
    check_supported(method, OmegaConf.create({"part": "whole", "trainer": {"train_head": "stage"}}))
    with pytest.raises(ValueError, match="distributed"):
        check_supported(
            type("NoDDP", (Method,), {"supports": Support(distributed=False)})("no_ddp"),
            OmegaConf.create({"part": "whole", "trainer": {}}),
            distributed=True,
        )


def test_the_runner_refuses_an_unsupported_setting_before_any_stage(pretrained_test_clip, tmp_path, monkeypatch):
    from conftest import TEST_PRESET

    from clipcl_runner.methods.base import Support
    from clipcl_runner.methods.finetune import Finetune
    from clipcl_runner.runner import run

    monkeypatch.setattr(Finetune, "supports", Support(part=("whole", "image")))
    cfg = compose_config(*TEST_PRESET, "logger=none", "method=finetune", "part=text", output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"'finetune' does not support part=text \(it supports whole, image\)"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # not even the zero-shot evaluation ran
