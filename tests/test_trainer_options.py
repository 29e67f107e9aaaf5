"""Trainer speed options change the speed, not the result: channels-last images and torch.compile."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_run

from clipcl_runner.methods.lwf import LwF
from clipcl_runner.trainer import StageTraining, TrainSettings


def trained_parameters(**options) -> list[torch.Tensor]:
    torch.manual_seed(0)
    run = tiny_run(stages=2)
    if options.get("channels_last"):
        run.model.to(memory_format=torch.channels_last)
    run.stage_index = 1
    method = LwF()
    parameters = method.setup(run)
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    settings = TrainSettings(batch_size=4, progress=False, freeze_bn=True, **options)
    # SGD, not Adam: Adam turns float noise in near-zero gradients into full-size steps
    StageTraining(run, method, parameters, lambda p: torch.optim.SGD(p, lr=0.1), None, settings, seed=0).run()
    return [p.detach().clone() for p in parameters]


def assert_same_training(**options) -> None:
    for plain, optioned in zip(trained_parameters(), trained_parameters(**options)):
        torch.testing.assert_close(optioned, plain, rtol=1e-3, atol=1e-4)


def test_channels_last_trains_the_same_model():
    assert_same_training(channels_last=True)


@pytest.mark.slow
def test_compiled_step_trains_the_same_model():
    assert_same_training(compile=True)


# -- options of the step itself ---------------------------------------------------------------------
import logging  # noqa: E402
import math  # noqa: E402

from clipcl_runner.methods.base import Method  # noqa: E402


def one_stage(settings: TrainSettings, method: Method | None = None, iterations: int = 1, lr: float = 1.0):
    """A tiny model, one stage of ``iterations`` SGD steps (no momentum: the update is -lr * gradient)."""
    run = tiny_run(stages=1)
    method = method or Method("finetune")
    parameters = method.setup(run)
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    run.train_stage.iterations = iterations
    training = StageTraining(run, method, parameters, lambda p: torch.optim.SGD(p, lr=lr), None, settings, seed=0)
    return run, parameters, training


def update_of(training, parameters) -> torch.Tensor:
    """The parameter change of the stage's steps."""
    before = torch.cat([p.detach().flatten().clone() for p in parameters])
    training.run()
    return torch.cat([p.detach().flatten() for p in parameters]) - before


def applied_gradient(training, parameters) -> torch.Tensor:
    """What the one SGD step applied, read exactly from .grad (update = -lr * this): the scaler
    unscales the gradients in place, and the trainer zeroes them only before the next step."""
    training.run()
    return torch.cat([p.grad.flatten() for p in parameters])


def enabled_scaler(scale: float) -> torch.amp.GradScaler:
    """fp16's grad scaler, on the CPU: the trainer's scaling/unscaling/skipping logic without CUDA."""
    return torch.amp.GradScaler("cpu", init_scale=scale)


def test_clip_before_unscale_applies_max_norm_over_scale():
    scale, max_norm = 1024.0, 1.0
    # the plain gradient g of the first step: lr 1, no clipping, no scaler
    _, parameters, training = one_stage(TrainSettings(batch_size=4, progress=False))
    gradient = applied_gradient(training, parameters)
    assert gradient.norm() * scale > 10 * max_norm  # the scaled gradient really gets clipped

    settings = TrainSettings(batch_size=4, progress=False, grad_clip_norm=max_norm, grad_clip_before_unscale=True)
    _, parameters, training = one_stage(settings)
    training.scaler = enabled_scaler(scale)
    quirk = applied_gradient(training, parameters)
    # by hand: clip(s*g, c) = c*g/|g| (as |s*g| > c), then unscaled: c*g / (s*|g|); norm c/s
    torch.testing.assert_close(quirk, max_norm * gradient / (scale * gradient.norm()), rtol=1e-4, atol=1e-10)
    assert quirk.norm().item() == pytest.approx(max_norm / scale, rel=1e-4)

    settings = TrainSettings(batch_size=4, progress=False, grad_clip_norm=max_norm)
    _, parameters, training = one_stage(settings)
    training.scaler = enabled_scaler(scale)
    clean = applied_gradient(training, parameters)  # unscaled first: the norm is min(|g|, c)
    assert clean.norm().item() == pytest.approx(min(gradient.norm().item(), max_norm), rel=1e-4)


class Overflowing(Method):
    """Fine-tuning whose loss (so every gradient) is infinite at the listed steps (0-based), or always."""

    def __init__(self, at: set[int] | None = None):
        super().__init__("overflowing")
        self.at, self.calls = at, 0

    def training_loss(self, run, images, labels):
        loss, terms = super().training_loss(run, images, labels)
        overflow = self.at is None or self.calls in self.at
        self.calls += 1
        return (loss * math.inf, terms) if overflow else (loss, terms)


def test_clip_before_unscale_still_skips_overflowing_steps_as_torch_does():
    settings = TrainSettings(batch_size=4, progress=False, grad_clip_norm=1.0, grad_clip_before_unscale=True)
    _, parameters, training = one_stage(settings, Overflowing(at={0}), iterations=1)
    training.scaler = enabled_scaler(1024.0)
    assert update_of(training, parameters).abs().max() == 0  # clipped inf -> NaN: the scaler skips the step
    assert training.scaler.get_scale() == 512.0  # and backs off by torch's factor 0.5


def test_clip_before_unscale_without_a_scaler_is_plain_clipping(caplog):
    plain = TrainSettings(batch_size=4, progress=False, grad_clip_norm=0.01)
    _, parameters, training = one_stage(plain)
    expected = update_of(training, parameters)
    with caplog.at_level(logging.INFO, logger="clipcl_runner.trainer"):
        _, parameters, training = one_stage(TrainSettings(**{**vars(plain), "grad_clip_before_unscale": True}))
    assert "the same as false" in caplog.text
    torch.testing.assert_close(update_of(training, parameters), expected)


def test_clip_before_unscale_needs_a_clip_norm():
    from conftest import compose_config

    from clipcl_runner.config_checks import ConfigError, validate

    with pytest.raises(ConfigError, match="trainer.grad_clip_norm is not set"):  # before any work
        validate(compose_config("trainer.grad_clip_before_unscale=true"))
    validate(compose_config("trainer.grad_clip_before_unscale=true", "trainer.grad_clip_norm=1.0"))


@pytest.mark.parametrize("clamp", [True, False])
def test_logit_scale_clamp_is_a_switch(clamp):
    run, _, training = one_stage(TrainSettings(batch_size=4, progress=False, clamp_logit_scale=clamp), lr=0.0)
    with torch.no_grad():
        run.model.logit_scale.fill_(math.log(200.0))
    training.run()
    assert run.model.logit_scale.exp().item() == pytest.approx(100.0 if clamp else 200.0, rel=1e-5)


# -- fp16 safety: a scaler that keeps skipping stops the run -------------------------------------
def test_fp16_stops_after_too_many_skipped_steps():
    settings = TrainSettings(batch_size=4, progress=False, fp16_max_skipped_steps=5)
    _, parameters, training = one_stage(settings, Overflowing(), iterations=40)
    training.scaler = enabled_scaler(2.0**16)
    with pytest.raises(FloatingPointError, match="skipped 10 steps in a row.*fp16_max_skipped_steps=5"):
        training.run()
    assert training.step == 10  # found at the first host check


def test_fp16_stops_when_the_scale_collapses():
    settings = TrainSettings(batch_size=4, progress=False, fp16_max_skipped_steps=1000, fp16_min_scale=100.0)
    _, _, training = one_stage(settings, Overflowing(), iterations=40)
    training.scaler = enabled_scaler(2.0**16)  # 10 skips: 2^16 / 2^10 = 64 < 100
    with pytest.raises(FloatingPointError, match="scale is 64.*fp16_min_scale=100"):
        training.run()


def test_fp16_trains_through_isolated_skipped_steps():
    settings = TrainSettings(batch_size=4, progress=False, fp16_max_skipped_steps=2)
    _, parameters, training = one_stage(settings, Overflowing(at={2, 9, 15}), iterations=20, lr=0.01)
    training.scaler = enabled_scaler(2.0**16)
    training.run()
    assert training.step == 20 and training.scaler.get_scale() == 2.0**13


def test_train_settings_are_the_typed_trainer_node():
    from conftest import compose_config

    from clipcl_runner.trainer import train_settings

    trainer = compose_config(
        "trainer.grad_clip_norm=1",
        "trainer.grad_clip_before_unscale=true",
        "trainer.clamp_logit_scale=false",
        "trainer.ddp_find_unused_parameters=true",
        "trainer.precision=auto",
    ).trainer
    settings = train_settings(trainer, precision="fp16")  # the precision the run resolved from auto
    assert isinstance(settings, TrainSettings) and settings.precision == "fp16" and trainer.precision == "auto"
    assert settings.grad_clip_norm == 1.0 and isinstance(settings.grad_clip_norm, float)  # typed: 1 -> 1.0
    assert settings.grad_clip_before_unscale and not settings.clamp_logit_scale and settings.ddp_find_unused_parameters
    assert settings.fp16_max_skipped_steps == trainer.fp16_max_skipped_steps == 50
    assert settings.optimizer["lr"] == trainer.optimizer.lr  # builder nodes come along, as plain dicts


# -- teachers in fp32 (trainer.teacher_precision) -------------------------------------------------
def test_teacher_precision_auto_stores_teachers_in_the_autocast_dtype():
    from clipcl_runner.methods.distill import frozen_copy

    run = tiny_run(stages=1)
    run.precision = "bf16"
    assert run.teacher_dtype == torch.bfloat16
    assert next(frozen_copy(run.model, run.teacher_dtype).parameters()).dtype == torch.bfloat16


def test_teacher_precision_fp32_runs_the_teacher_in_fp32_outside_autocast():
    import copy

    from clipcl_runner.methods.base import RunContext
    from clipcl_runner.methods.distill import frozen_copy
    from clipcl_runner.text_encoding import encode_text

    run = tiny_run(stages=1)
    run.precision, run.teacher_precision = "bf16", "fp32"
    run.model.eval()  # BatchNorm as in the teacher
    teacher = frozen_copy(run.model, run.teacher_dtype)
    assert run.teacher_dtype == torch.float32 and all(p.dtype == torch.float32 for p in teacher.parameters())
    images, tokens = torch.randn(4, 3, 32, 32), run.tokenizer(["a photo of a shape0a.", "a photo."])
    with torch.no_grad():
        fp32_images, fp32_texts = run.model.encode_image(images), run.model.encode_text(tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            student = run.model.encode_image(images)
            teacher_images = teacher.encode_image(images)
            teacher_texts = encode_text(teacher, tokens, normalize=False)  # the cut, functional_call path
            copied = copy.deepcopy(teacher).encode_image(images)
    assert student.dtype == torch.bfloat16  # the student is under autocast
    for got, want in ((teacher_images, fp32_images), (teacher_texts, fp32_texts), (copied, fp32_images)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    method = Method("finetune")  # the teacher's class logits (LwF, iCaRL) are fp32 as well
    with torch.no_grad():
        want = method.class_logits(run, teacher, fp32_images, ["shape0a", "shape0b"], ["a photo of a {}."])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = method.class_logits(run, teacher, teacher_images, ["shape0a", "shape0b"], ["a photo of a {}."])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="trainer.teacher_precision"):
        RunContext(model=run.model, tokenizer=None, device=run.device, stages=run.stages, teacher_precision="fp16")


def test_teacher_precision_fp32_is_a_no_op_without_autocast():
    run = tiny_run(stages=1)
    run.teacher_precision = "fp32"
    assert run.teacher_dtype is None  # fp32 run: the teacher is a plain copy
