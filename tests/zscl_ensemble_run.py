"""One ZSCL stage on a nano CLIP, run by tests/test_zscl_ensemble.py as one process, one compiled process or
two gloo processes (torchrun); saves the weight ensemble's result (rank 0) to the path in argv[1].

Not a test module itself (its name does not start with test_)."""

from __future__ import annotations

import sys

import open_clip
import torch

from clipcl_runner import distributed
from clipcl_runner.data.reference import ReferenceSet
from clipcl_runner.data.stages import Stage, TensorImages
from clipcl_runner.methods.base import RunContext
from clipcl_runner.methods.lwf_vr import LwFVR
from clipcl_runner.methods.zscl import ZSCL
from clipcl_runner.trainer import StageTraining, TrainSettings

# No BatchNorm (a ViT): two ranks' halves of a batch give exactly the gradient of the whole batch.
NANO = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "patch_size": 16, "head_width": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
STEPS, EVERY = 5, 2  # official timing: θ̄ samples θ_start and the weights after steps 1, 3 and 5


def main(out: str, compile: bool, method_name: str = "zscl") -> None:
    torch.set_num_threads(1)
    world = distributed.init_distributed("cpu")
    torch.manual_seed(0)
    model = open_clip.CLIP(**NANO)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(16, 3, 32, 32, generator=generator)
    data = TensorImages(images, torch.arange(16) % 2)
    reference = ReferenceSet(
        TensorImages(torch.randn(6, 3, 32, 32, generator=generator), torch.arange(6)),
        ["a red star.", "a blue circle", "a heart"],
    )
    run = RunContext(
        model=model,
        tokenizer=open_clip.tokenizer.SimpleTokenizer(context_length=32),
        device=torch.device("cpu"),
        stages=[Stage("T1", ["a", "b"], data, data, iterations=STEPS)],
    )
    if method_name == "lwf_vr":  # its second batch is an auxiliary stream too, sized by the trainer
        method = LwFVR(num_texts=5)
    else:
        method = ZSCL(reference=reference, ref_batch_size=3, we_every=EVERY, we_timing="official")
    parameters = method.setup(run)
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    settings = TrainSettings(batch_size=8, progress=False, compile=compile)
    StageTraining(run, method, parameters, lambda p: torch.optim.SGD(p, lr=0.5), None, settings, seed=1).run()
    average = getattr(method, "average", None)
    count, averaged = (average.count, method.averaged_step) if average is not None else (None, None)
    method.end_stage(run)
    if world.is_main:
        torch.save(
            {
                "count": count,
                "averaged_step": averaged,
                "ensemble": {n: p.detach().clone() for n, p in model.named_parameters()},
            },
            out,
        )
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], "--compile" in sys.argv[2:], "lwf_vr" if "--lwf-vr" in sys.argv[2:] else "zscl")
