"""Teachers stored in the autocast dtype: every teacher method still gives a finite loss and gradients.

CUDA is not needed: CPU autocast in bf16 exercises the same dtype mixing (bf16 teacher, fp32 student)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_run
from test_methods_zscl import tiny_reference

from clipcl_runner.methods.geodl import GeoDL
from clipcl_runner.methods.icarl import ICaRL
from clipcl_runner.methods.lwf import LwF
from clipcl_runner.methods.lwf_vr import LwFVR
from clipcl_runner.methods.vr_lwf import VRLwF
from clipcl_runner.methods.zscl import ZSCL

METHODS = {
    "lwf": lambda: LwF(),
    "vr_lwf": lambda: VRLwF(num_texts=8),
    "geodl": lambda: GeoDL(),
    "icarl": lambda: ICaRL(memory_size=4),
    "lwf_vr": lambda: LwFVR(num_texts=8),
    "zscl": lambda: ZSCL(reference=tiny_reference(), ref_batch_size=4, we_every=1),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_teacher_in_bf16_trains_the_fp32_student(name):
    torch.manual_seed(0)
    run = tiny_run(stages=2)
    run.precision = "bf16"
    method = METHODS[name]()
    parameters = method.setup(run)
    for index in range(2):  # the second stage has an old model (and exemplars) for every method
        run.stage_index = index
        method.begin_stage(run)
        run.train_stage = method.training_stage(run)
        images, labels = next(iter(torch.utils.data.DataLoader(run.train_stage.train, batch_size=8, shuffle=False)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, terms = method.training_loss(run, images, labels)
        loss.backward()
        assert torch.isfinite(loss), terms
        assert all(p.dtype == torch.float32 for p in run.model.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in parameters)
        teacher = getattr(method, "teacher", None)
        if teacher is not None:
            assert next(teacher.parameters()).dtype == torch.bfloat16
        method.end_stage(run)
