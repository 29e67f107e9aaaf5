"""CUDA paths: AMP training steps and evaluation on the GPU (skipped where there is none; CI has none)."""
from __future__ import annotations

import pytest
import torch

from clipcl_runner.evaluation import Evaluator
from clipcl_runner.methods.lwf import LwF
from clipcl_runner.trainer import StageTraining, TrainSettings
from conftest import tiny_run

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
    training = StageTraining(run, method, parameters, make_optimizer, None,
                             TrainSettings(batch_size=4, precision=precision, progress=False), seed=0)
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
