"""CUDA paths: AMP training steps and evaluation on the GPU (skipped where there is none; CI has none)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_run

from clipcl_runner.evaluation import Evaluator
from clipcl_runner.methods.lwf import LwF
from clipcl_runner.trainer import StageTraining, TrainSettings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def make_optimizer(parameters, lr=1e-4):
    return torch.optim.AdamW(parameters, lr=lr, fused=True)


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_amp_training_step_on_cuda(precision):
    run = tiny_run(stages=2)
    run.model.to(CUDA)
    run.device, run.precision, run.stage_index = CUDA, precision, 1
    method = LwF()
    parameters = method.setup(run)
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    if precision != "fp32":
        assert next(method.teacher.parameters()).dtype == run.teacher_dtype
    before = [p.detach().clone() for p in parameters]
    training = StageTraining(
        run,
        method,
        parameters,
        make_optimizer,
        None,
        TrainSettings(batch_size=4, precision=precision, progress=False),
        seed=0,
    )
    stats = training.run()
    assert stats["train/steps"] == training.total > 0 and all(v == v for v in stats.values())
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # master weights stay fp32
    assert any(not torch.equal(b, p) for b, p in zip(before, parameters))


def test_evaluation_on_cuda_matches_cpu():
    run = tiny_run(stages=2)
    model = run.model.eval()
    on_cpu = Evaluator(run.stages, [], run.tokenizer, torch.device("cpu"))(model, 1)
    on_gpu = Evaluator(run.stages, [], run.tokenizer, CUDA, precision="fp32")(model.to(CUDA), 1)
    for key, value in on_cpu.items():
        assert on_gpu[key] == pytest.approx(value, abs=1e-3), key


def test_cl_clip_fp16_setting_on_cuda():
    """ding2022's precision setting: fp16 + grad scaler, clipping before unscaling, fp32 teacher run outside
    autocast, no logit-scale clamp; the scaler starts at torch's 65536, so the applied norm is <= 1/65536."""
    run = tiny_run(stages=2)
    run.model.to(CUDA)
    run.device, run.precision, run.teacher_precision, run.stage_index = CUDA, "fp16", "fp32", 1
    method = LwF()
    parameters = method.setup(run)
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    assert next(method.teacher.parameters()).dtype == torch.float32
    with torch.autocast("cuda", dtype=torch.float16):
        assert method.teacher.encode_image(torch.randn(2, 3, 32, 32, device=CUDA)).dtype == torch.float32
    run.train_stage.iterations = 1
    settings = TrainSettings(
        batch_size=4,
        precision="fp16",
        progress=False,
        grad_clip_norm=1.0,
        grad_clip_before_unscale=True,
        clamp_logit_scale=False,
    )
    before = [p.detach().clone() for p in parameters]
    training = StageTraining(run, method, parameters, lambda p: torch.optim.SGD(p, lr=1.0), None, settings, seed=0)
    training.run()
    update = torch.cat([(p.detach() - b).flatten() for b, p in zip(before, parameters)])
    if training.scaler.get_scale() == 65536.0:  # the step was taken (not skipped for an overflow)
        assert 0 < update.norm().item() <= 1.0 / 65536 * 1.01


def test_fp16_run_stops_when_every_step_overflows_on_cuda():
    class Overflowing(LwF):
        def training_loss(self, run, images, labels):
            loss, terms = super().training_loss(run, images, labels)
            return loss * float("inf"), terms

    run = tiny_run(stages=1)
    run.model.to(CUDA)
    run.device, run.precision = CUDA, "fp16"
    method = Overflowing()
    parameters = method.setup(run)
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    run.train_stage.iterations = 30
    settings = TrainSettings(batch_size=4, precision="fp16", progress=False, fp16_max_skipped_steps=5)
    training = StageTraining(run, method, parameters, make_optimizer, None, settings, seed=0)
    with pytest.raises(FloatingPointError, match="grad scaler skipped"):
        training.run()
